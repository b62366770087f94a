"""The long-tail report: tables against hand-made records (means and intervals by hand), an empty bin said
in words in tables and figures, the subject-popularity axis named as such, the paper's Table 2 layout, and
the part inside ``kedit report`` beside real (tiny-model) probe and edit runs."""

from __future__ import annotations

import json
from pathlib import Path

from kedit.longtail.aggregate import CellSettings
from kedit.reports.longtail import (
    cardinality_table,
    group_benchmarks,
    is_longtail_run,
    is_probe_run,
    probe_table,
    read_longtail_run,
    table2,
)
from kedit.reports.longtail_plots import (
    EMPTY_TEXT,
    cardinality_figure,
    edit_figure,
    probe_figure,
    write_longtail_part,
)
from kedit.runs import LONGTAIL_PROBE

LABELS = ["[0,10)", "[10,100)", "[100,1000)", "[1000,inf)"]
DATA = {"name": "longtail", "path": "runs/bench", "cases_sha256": "abc", "benchmark_sha256": "abc123",
        "manifest": {"source": "org.Hs.eg.db", "axis": "subject-popularity", "levels": ["document"],
                     "bins": {"edges": [10, 100, 1000], "labels": LABELS}}}
SETTINGS = CellSettings(resamples=1000)


def fact(bin_label: str, cardinality: str) -> dict:
    return {"subject": "G", "relation": "chromosome", "object": "7", "cardinality": cardinality,
            "axis": "subject-popularity", "counts": {"document": 1}, "bins": {"document": bin_label}, "n_objects": 2}


# (case id, bin, cardinality, plain accuracy, demonstrated accuracy, demonstrated best over objects)
PROBED = [("a", "[0,10)", "one-to-one", 0.0, 1.0, 1.0), ("b", "[0,10)", "one-to-many", 0.5, 0.5, 1.0),
          ("c", "[10,100)", "one-to-many", 1.0, 0.0, 0.5), ("d", "[1000,inf)", "one-to-one", 1.0, 1.0, 1.0)]
# (case id, bin, cardinality, reliability before, after, generalization after, locality after)
EDITED = [("a", "[0,10)", "one-to-one", 0.0, 1.0, 0.5, 1.0), ("b", "[0,10)", "one-to-many", 0.5, 0.5, 0.0, 0.5),
          ("d", "[1000,inf)", "one-to-one", 1.0, 1.0, 1.0, 1.0)]


def write(folder: Path, info: dict, records: list[dict], facts: list[dict] | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps(info))
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "summary.json").write_text(json.dumps({"cases": len(records)}))
    if facts is not None:
        (folder / "longtail_facts.jsonl").write_text("".join(json.dumps(f) + "\n" for f in facts))
    return folder


def probe_folder(tmp_path: Path) -> Path:
    records = [{"index": i, "key": c, "case_id": c, "longtail": fact(b, card), "seconds": 0.5,
                "probe": {"plain": {"accuracy": p, "best_accuracy": p}, "demonstrations": {"accuracy": d,
                                                                                          "best_accuracy": best, "k": 5}}}
               for i, (c, b, card, p, d, best) in enumerate(PROBED)]
    return write(tmp_path / "probe", {"kind": LONGTAIL_PROBE, "model": {"name": "tiny"}, "data": DATA}, records)


def edit_folder(tmp_path: Path) -> Path:
    records = [{"index": i, "key": f"{i}:x", "case_id": c, "seconds": {"edit": 2.0, "evaluate": 0.5},
                "token": {"pre": {"reliability": pre, "generalization": 0.0, "locality_accuracy": 0.5},
                          "post": {"reliability": post, "generalization": gen, "locality": loc,
                                   "locality_accuracy": 0.5}}}
               for i, (c, b, card, pre, post, gen, loc) in enumerate(EDITED)]
    facts = [{"case_id": c, "longtail": fact(b, card)} for c, b, card, *_ in EDITED]
    return write(tmp_path / "edit", {"kind": "bench", "method": "rome", "model": {"name": "tiny"}, "data": DATA},
                 records, facts)


def row(table: str, start: str) -> list[str]:
    line = next(line for line in table.splitlines() if line.startswith(f"| {start}"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_probe_tables_by_hand(tmp_path):
    run = read_longtail_run(probe_folder(tmp_path))
    table = probe_table([run], "document", LABELS, SETTINGS)
    # [0,10) without demonstrations: facts a (0.0) and b (0.5): mean 0.25; two values resample to 0, 0.25 or 0.5
    assert row(table, "tiny, no demonstrations") == ["tiny, no demonstrations", "0.25 [0.00, 0.50] (2)",
                                                     "1.00 [1.00, 1.00] (1)", "empty", "1.00 [1.00, 1.00] (1)"]
    assert row(table, "tiny, 5 demonstrations")[1:3] == ["0.75 [0.50, 1.00] (2)", "0.00 [0.00, 0.00] (1)"]
    by_card = cardinality_table([run], "document", LABELS, SETTINGS)
    assert row(by_card, "tiny, one-to-many, own object")[1:3] == ["0.50 [0.50, 0.50] (1)", "0.00 [0.00, 0.00] (1)"]
    assert row(by_card, "tiny, one-to-many, best of all valid objects")[1:3] == ["1.00 [1.00, 1.00] (1)",
                                                                                 "0.50 [0.50, 0.50] (1)"]
    assert row(by_card, "tiny, one-to-one, own object")[2] == "empty"  # [10,100) has no one-to-one fact


def test_table2_layout_by_hand(tmp_path):
    run = read_longtail_run(edit_folder(tmp_path))
    table = table2([run], "document", LABELS, SETTINGS)
    header = [cell.strip() for cell in table.splitlines()[0].strip("|").split("|")]
    assert header[:5] == ["model", "method", "[0,10) Rel.", "[0,10) Gen.", "[0,10) Loc."]
    assert len(header) == 2 + 3 * len(LABELS)
    unedited = row(table, "tiny | unedited")
    assert unedited[2:5] == ["0.25 [0.00, 0.50] (2)", "0.00 [0.00, 0.00] (2)", "–"]
    rome = row(table, "tiny | rome")
    assert rome[2:5] == ["0.75 [0.50, 1.00] (2)", "0.25 [0.00, 0.50] (2)", "0.75 [0.50, 1.00] (2)"]
    assert rome[5:8] == ["empty", "empty", "empty"]  # nothing edited in [10,100)
    assert rome[11:14] == ["1.00 [1.00, 1.00] (1)"] * 3


def _texts(figure) -> list[str]:
    return [text.get_text() for axes in figure.axes for text in axes.texts]


def test_figures_say_empty_and_name_the_axis(tmp_path):
    runs = [read_longtail_run(probe_folder(tmp_path)), read_longtail_run(edit_folder(tmp_path))]
    (bench,) = group_benchmarks(runs)
    for figure in (probe_figure(bench, "document", SETTINGS), cardinality_figure(bench, "document", SETTINGS),
                   edit_figure(bench, "document", SETTINGS)):
        visible = [axes for axes in figure.axes if axes.get_visible()]
        assert all(axes.get_xlabel().startswith("subject popularity bin") for axes in visible)
        assert all("co-occurrence" not in axes.get_xlabel() for axes in visible)
        assert EMPTY_TEXT in _texts(figure)  # [100,1000) holds no fact: said, not left blank
    probe = probe_figure(bench, "document", SETTINGS)
    assert [t.get_text() for t in probe.axes[0].get_xticklabels()] == LABELS


def test_part_of_the_report_page(tmp_path):
    probe, edit = probe_folder(tmp_path), edit_folder(tmp_path)
    assert is_probe_run(probe) and not is_probe_run(edit) and is_longtail_run(edit)
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "run.json").write_text(json.dumps({"kind": LONGTAIL_PROBE}))
    out = tmp_path / "report"
    out.mkdir()
    (out / "longtail_old_probe.png").write_bytes(b"stale")
    part = write_longtail_part([probe, edit, unfinished], out, SETTINGS)
    assert [f.path for f in part.failures] == [unfinished] and "has not finished" in part.failures[0].reason
    names = sorted(path.name for path in part.plots)
    assert len(names) == 4 and all(name.startswith("longtail_org-hs-eg-db-abc123_") for name in names)
    assert all((out / name).stat().st_size > 1000 for name in names)
    assert not (out / "longtail_old_probe.png").exists()
    page = "\n\n".join(part.sections)
    assert "**Frequency axis: subject popularity**" in page
    assert "the paper's Table 2 layout" in page
    assert "One level only: the subject-popularity axis counts documents only" in page
    assert "| tiny · rome | 1 / 1 | empty | empty | 1 / 0 |" in page  # facts per bin x cardinality
    for name in names:
        assert f"]({name})" in page


def test_inside_kedit_report_with_real_runs(make_lm, tmp_path):
    """kedit report over a tiny model's probe and edit runs: one page with the long-tail part first."""
    from kedit.longtail.evaluate import run_edit
    from kedit.longtail.probe import run_probe
    from kedit.reports.report_writer import write_comparison_report
    from tests.test_longtail_probe import write_bench

    lm = make_lm("llama")
    bench = write_bench(tmp_path / "bench")
    run_probe(lm, bench, tmp_path / "probe", k=2, progress=False)
    run_edit(lm, bench, "test-longtail-nochange", tmp_path / "edit", progress=False)
    written = write_comparison_report([tmp_path / "probe", tmp_path / "edit"], tmp_path / "report")
    assert not written.failures
    page = written.markdown.read_text()
    assert page.index("## Long-tail knowledge") < page.index("## Provenance")
    assert "Frequency axis: subject popularity" in page
    assert "[100,1000) Rel." in page and "empty" in page
    assert any(path.name.startswith("longtail_") for path in written.plots)
    assert "data:image/png;base64," in written.html.read_text()
