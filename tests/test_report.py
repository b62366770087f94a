"""`kedit report`: run directories in, markdown + self-contained HTML + PNGs out.

The run directories are built here, in the layout `kedit bench` / `kedit pitfalls` write, from real
evaluate()/summarize() output on a tiny model (the "edits" are seeded random weight deltas: the
report only reads numbers, so any edit that changes them will do).
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import kedit
from kedit.cli import app
from kedit.demo import write_report as write_demo_report
from kedit.edits import WeightEdit
from kedit.evaluate.evaluation import evaluate, summarize
from kedit.models import prepare_model
from kedit.reports.comparison import PROBABILITY, SURVEY, TOKEN, curves, metric_series, run_labels
from kedit.reports.formatting import format_probability, format_score
from kedit.reports.html import markdown_to_html
from kedit.reports.pitfalls_tables import CONFLICT, ROUND, paper_rows
from kedit.reports.report_writer import write_comparison_report
from kedit.reports.runs import BENCH, read_run, read_runs
from kedit.requests import Case, EditRequest, LocalityProbe, PortabilityProbe
from tests.requirements import require
from tests.tiny_models import build_model, train_tokenizer

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# --------------------------------------------------------------------------------------- fabricated runs


def _cases() -> list[Case]:
    facts = [
        ("The Eiffel Tower is located in the city of", "Eiffel Tower", "Rome", "Paris"),
        ("The mother tongue of Danielle Darrieux is", "Danielle Darrieux", "English", "French"),
        ("Michael Jordan plays the sport of", "Michael Jordan", "football", "basketball"),
    ]
    return [
        Case(
            request=EditRequest(prompt=prompt, subject=subject, target_new=new, target_true=true),
            rephrases=(f"Where is {subject}? It is in", f"{subject} is a thing of"),
            locality=(LocalityProbe("Berlin is the capital of", "Germany"),
                      LocalityProbe("The Louvre is a museum in", "Paris")),
            portability=(PortabilityProbe(f"The country of {subject} is", "Italy"),),
            case_id=f"case-{index}",
        )
        for index, (prompt, subject, new, true) in enumerate(facts)
    ]


class Evaluator:
    """evaluate()/summarize() on one tiny Llama with seeded random MLP deltas of a given scale."""

    def __init__(self) -> None:
        tokenizer = train_tokenizer()
        self.lm = prepare_model(build_model("llama", len(tokenizer), seed=0), tokenizer, source="tiny-llama")
        self.cases = _cases()
        self.parameter = next(name for name, _ in self.lm.model.named_parameters() if "down_proj" in name)

    def records(self, scale: float, seed: int = 0) -> list[dict]:
        shape = self.lm.parameter(self.parameter).shape
        delta = scale * torch.randn(shape, generator=torch.Generator().manual_seed(seed))
        edit = WeightEdit("fake", tuple(c.request for c in self.cases), {}, {self.parameter: delta},
                          self.lm.fingerprint)
        return evaluate(self.lm, self.cases, edit)


@pytest.fixture(scope="module")
def evaluator() -> Evaluator:
    torch.set_num_threads(1)
    return Evaluator()


def _write_json(path: Path, payload: object) -> None:
    path.write_text(json.dumps(payload, indent=2), encoding="utf-8")


def _write_lines(path: Path, lines: list[dict]) -> None:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")


def write_bench_run(directory: Path, records: list[dict], method: str, *, mode: str = "single",
                    survey: dict | None = None, survey_probability: dict | None = None, curve: list[tuple[int, dict]] | None = None,
                    kind: str | None = "bench", model: str = "tiny-llama", fingerprint: str = "ab" * 32,
                    data_sha: str = "cd" * 32, data_name: str = "tiny-facts", cases_sha: str | None = None,
                    curve_records: dict[int, list[dict]] | None = None, mode_spec: str | None = None,
                    command: str | None = None) -> Path:
    """A run directory as `kedit bench` writes it: run.json, results.jsonl, summary.json, curve.jsonl.

    ``cases_sha`` is the digest of the cases (runs with equal ones are paired); ``curve_records``
    adds per-case records to the curve lines of those checkpoints.
    """
    directory.mkdir(parents=True)
    info = {
        "model": model, "fingerprint": fingerprint, "method": method, "hparams": {"layer": 1},
        "data": {"name": data_name, "path": "/data/tiny.json", "sha256": data_sha,
                 **({"cases_sha256": cases_sha} if cases_sha else {})},
        "protocol": "both", "mode": mode, "n": len(records), "versions": {"kedit": "0.1.0"},
        "command": command or f"kedit bench --method {method} --mode {mode}",
    }
    if mode_spec is not None:
        info["mode_spec"] = mode_spec
    if kind is not None:
        info["kind"] = kind
    _write_json(directory / "run.json", info)
    _write_lines(directory / "results.jsonl", [{**r, "seconds": {"edit": 0.1}} for r in records])
    summary = summarize(records)
    if survey is not None:
        summary["survey"] = survey
    if survey_probability is not None:
        summary["survey_probability"] = survey_probability
    _write_json(directory / "summary.json", summary)
    if curve is not None:
        extra = curve_records or {}
        _write_lines(directory / "curve.jsonl", [{"n_edits": n, "summary": s,
                                                  **({"records": extra[n]} if n in extra else {})} for n, s in curve])
    return directory


@pytest.fixture(scope="module")
def bench_runs(evaluator, tmp_path_factory) -> dict:
    """Three bench runs (two single-edit methods, one sequential with a curve) and their summaries."""
    root = tmp_path_factory.mktemp("runs")
    small, large = evaluator.records(0.05, seed=1), evaluator.records(2.0, seed=2)
    checkpoints = [(n, summarize(evaluator.records(0.2 * n, seed=3))) for n in (8, 1, 0, 2, 4)]
    survey = {"success_rate": 0.9, "generalization_rate": 0.6, "drawdown": -0.05}
    return {
        "rome": write_bench_run(root / "rome", small, "rome"),
        "memit": write_bench_run(root / "memit", large, "memit", survey=survey,
                                 survey_probability={"success_rate": 0.8, "generalization_rate": 0.7, "drawdown": 0.1}),
        "seq": write_bench_run(root / "memit-seq", large, "memit", mode="sequential", curve=checkpoints),
        "summaries": {"rome": summarize(small), "memit": summarize(large)},
        "checkpoints": dict(checkpoints),
    }


# ------------------------------------------------------------------------------------------------ reading


def test_bench_run_is_recognised_without_kind_from_its_records(evaluator, tmp_path):
    run = read_run(write_bench_run(tmp_path / "r", evaluator.records(0.1), "rome", kind=None))
    assert run.kind == BENCH and run.method == "rome" and len(run.records) == 3


def test_unreadable_folders_are_listed_with_their_reason(evaluator, tmp_path):
    no_kind = tmp_path / "no-kind"
    no_kind.mkdir()
    _write_json(no_kind / "run.json", {"method": "x"})
    _write_lines(no_kind / "results.jsonl", [{"answer": 1}])
    unknown = write_bench_run(tmp_path / "unknown", evaluator.records(0.1), "rome", kind="pitfalls-mystery")
    unfinished = write_bench_run(tmp_path / "unfinished", evaluator.records(0.1), "rome")
    (unfinished / "summary.json").unlink()
    corrupt = write_bench_run(tmp_path / "corrupt", evaluator.records(0.1), "rome")
    lines = (corrupt / "results.jsonl").read_text().splitlines(keepends=True)
    (corrupt / "results.jsonl").write_text(lines[0] + "{not json\n" + lines[1])
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("hello")

    runs, failures = read_runs([no_kind, unknown, unfinished, corrupt, stranger, tmp_path / "missing"])
    assert runs == []
    reasons = {failure.path.name: failure.reason for failure in failures}
    assert "has no 'kind'" in reasons["no-kind"] and "answer" in reasons["no-kind"]
    assert "'pitfalls-mystery'" in reasons["unknown"]
    assert "no summary.json" in reasons["unfinished"] and "3 complete record(s)" in reasons["unfinished"]
    assert "results.jsonl line 2 is not valid JSON" in reasons["corrupt"]
    assert "no run.json" in reasons["stranger"] and "notes.txt" in reasons["stranger"]
    assert reasons["missing"] == "does not exist"


def test_a_stopped_sequential_run_is_shown_up_to_its_last_checkpoint(evaluator, tmp_path):
    checkpoints = [(n, summarize(evaluator.records(0.2 * n, seed=3))) for n in (1, 2, 5)]
    directory = write_bench_run(tmp_path / "seq", evaluator.records(0.1), "memit", mode="sequential",
                                curve=checkpoints)
    (directory / "summary.json").unlink()
    (directory / "results.jsonl").unlink()  # a sequential run writes its records only at the end
    run = read_run(directory)
    assert run.n == 5 and run.info["planned_n"] == 3  # write_bench_run records n = its 3 records
    assert [point.n_edits for point in run.curve] == [1, 2, 5]
    assert run.metrics["probability"] == checkpoints[-1][1]["probability"]
    assert run.notes == ("unfinished: stopped after 5 of 3 edits (no summary.json); "
                         "its metrics are those of the checkpoint at 5 edits",)
    (directory / "curve.jsonl").unlink()  # nothing measured: still refused
    with pytest.raises(kedit.KeditError, match="no summary.json"):
        read_run(directory)


def test_an_unfinished_last_line_is_not_a_record(evaluator, tmp_path):
    directory = write_bench_run(tmp_path / "r", evaluator.records(0.1), "rome")
    with open(directory / "results.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"case_id": "half-writ')
    run = read_run(directory)
    assert len(run.records) == 3 and run.notes == ()


def test_a_demo_folder_still_gets_its_report_and_reads_as_a_bench_run(evaluator, tmp_path):
    """The demo writes its own report with these modules; `kedit report` can also compare demo folders."""
    records = [{**record, "edit": {"method": "rome", "layer": 1}} for record in evaluator.records(0.5)]
    summary = {"kind": "kedit-demo", "command": "kedit demo", "method": "rome", "cases": len(records),
               "model": {"name": "smollm2-135m", "fingerprint": "ef" * 32, "device": "cpu"},
               "metrics": summarize(records), "seconds": {}, "versions": {}}
    directory = tmp_path / "demo"
    directory.mkdir()
    _write_lines(directory / "results.jsonl", records)
    page = write_demo_report(records, summary, directory).read_text()
    p_new = format_probability(records[0]["probability"]["post"]["p_new"])
    assert f"| {p_new} |" in page and "![case probabilities](case_probabilities.png)" in page
    run = read_run(directory)
    assert (run.kind, run.method, run.model_name, run.fingerprint) == (BENCH, "rome", "smollm2-135m", "ef" * 32)
    assert run.metrics["probability"]["post"] == summarize(records)["probability"]["post"]


# ------------------------------------------------------------------------------------------ comparison


def test_series_hold_each_runs_post_means_and_one_shared_baseline(bench_runs):
    runs, _ = read_runs([bench_runs["rome"], bench_runs["memit"]])
    series = metric_series(runs, PROBABILITY)
    assert [s.label for s in series] == ["unedited tiny-llama", "rome", "memit"]
    summaries = bench_runs["summaries"]
    for row, name in ((series[1], "rome"), (series[2], "memit")):
        assert row.values == {spec.key: summaries[name]["probability"]["post"][spec.key]
                              for spec in PROBABILITY.specs}
    # Both runs measured the same unedited model on the same data: their "pre" numbers coincide.
    assert series[0].baseline and series[0].values["efficacy_score"] == summaries["rome"]["probability"]["pre"]["efficacy_score"]
    token = metric_series(runs, TOKEN)
    assert token[0].values["locality"] is None  # locality compares with the unedited model: no "pre"
    assert token[2].values["locality"] == summaries["memit"]["token"]["post"]["locality"]
    assert [s.label for s in metric_series(runs, SURVEY)] == ["memit"]  # survey metrics only where written


def test_different_data_gives_separate_baselines(evaluator, tmp_path):
    a = write_bench_run(tmp_path / "a", evaluator.records(0.1), "rome", data_sha="11" * 32)
    b = write_bench_run(tmp_path / "b", evaluator.records(0.1), "rome", data_sha="22" * 32)
    runs, _ = read_runs([a, b])
    labels = [s.label for s in metric_series(runs, TOKEN)]
    assert labels == ["unedited tiny-llama (tiny-facts, n=3, model abababab, data 11111111)",
                      "unedited tiny-llama (tiny-facts, n=3, model abababab, data 22222222)",
                      "rome (single, n=3) [a]", "rome (single, n=3) [b]"]
    assert run_labels(runs) == labels[2:]


def test_curves_are_sorted_by_number_of_edits(bench_runs):
    runs, _ = read_runs([bench_runs["rome"], bench_runs["seq"]])
    (curve,) = curves(runs, PROBABILITY, "efficacy_score")
    checkpoints = bench_runs["checkpoints"]
    assert curve.label == "memit (sequential)"
    assert curve.points == tuple((n, checkpoints[n]["probability"]["post"]["efficacy_score"]) for n in (0, 1, 2, 4, 8))


# ------------------------------------------------------------------------------------------------ pitfalls


def write_pitfalls_run(directory: Path, kind: str, method: str, summary: dict, *, model: str = "tiny-llama",
                       **info: object) -> Path:
    """A run directory as `kedit pitfalls conflict|round` writes it: run.json with its kind, results, summary."""
    directory.mkdir(parents=True)
    _write_json(directory / "run.json", {"kind": kind, "model": model, "method": method, **info})
    _write_lines(directory / "results.jsonl", [{"case_id": "0", "metrics": {}}])
    _write_json(directory / "summary.json", summary)
    return directory


def test_conflict_table_has_the_papers_columns_and_one_row_per_method(tmp_path):
    runs, failures = read_runs([
        # one run per data set, flat metrics, the data set named in run.json ...
        write_pitfalls_run(tmp_path / "a", "pitfalls-conflict", "rome", {"CS_exp": 0.7, "CM": 0.25},
                           subset="reverse"),
        write_pitfalls_run(tmp_path / "b", "pitfalls-conflict", "rome", {"cs": 0.4, "cm": 0.25},
                           data={"path": "/d/reverse_edit.json"}, explicit=False),
        # ... or one block per data set
        write_pitfalls_run(tmp_path / "c", "pitfalls-conflict", "rome",
                           {"composite": {"cs_exp": 0.5, "cs_imp": 0.3, "cm": 0.1, "FFD": 0.05},
                            "coverage": {"succ": 0.98}}),
        write_pitfalls_run(tmp_path / "d", "pitfalls-conflict", "memit", {"coverage": {"Succ": 0.9}}),
        write_pitfalls_run(tmp_path / "e", "pitfalls-conflict", "ft", {"accuracy": 1.0}),
    ])
    assert failures == []
    rows = paper_rows(runs, CONFLICT)
    assert rows.headers == ("method", "Coverage Succ", "Reverse CS_exp", "Reverse CS_imp", "Reverse CM",
                            "Composite CS_exp", "Composite CS_imp", "Composite CM", "Composite TFD")
    assert rows.rows == (("rome", "0.98", "0.70", "0.40", "0.25", "0.50", "0.30", "0.10", "0.05"),
                         ("memit", "0.90", "–", "–", "–", "–", "–", "–", "–"))
    assert len(rows.notes) == 1 and "ft" in rows.notes[0] and "accuracy" in rows.notes[0]


def test_round_table_splits_easy_and_hard_and_flags_disagreeing_runs(tmp_path):
    runs, _ = read_runs([
        write_pitfalls_run(tmp_path / "a", "pitfalls-round", "memit", {"easy": {"succ": 0.8, "D": 0.01, "IR": 0.4, "FR": 0.3}}),
        write_pitfalls_run(tmp_path / "b", "pitfalls-round", "memit", {"succ": 0.6, "d": 0.02, "ir": 0.5, "fr": 0.45},
                           split="hard"),
        write_pitfalls_run(tmp_path / "c", "pitfalls-round", "memit", {"easy": {"succ": 0.7}}),
        write_pitfalls_run(tmp_path / "d", "pitfalls-round", "mle", {"easy": {"succ": 0.75, "fr": 0.1}},
                           model="other-model"),
    ])
    rows = paper_rows(runs, ROUND)
    assert rows.headers[:3] == ("model", "method", "Easy Succ ↑") and rows.headers[-1] == "Hard FR ↓"
    assert rows.rows[0] == ("tiny-llama", "memit", "0.80", "0.01", "0.40", "0.30", "0.60", "0.02", "0.50", "0.45")
    assert rows.rows[1] == ("other-model", "mle", "0.75", "–", "–", "0.10", "–", "–", "–", "–")
    assert rows.notes == ("Easy Succ ↑ of memit is 0.80 in memit [a] and 0.70 in memit [c]; the table shows the first",)


# ---------------------------------------------------------------------------------------------- the page


def _table_after(markdown: str, heading: str) -> list[list[str]]:
    """The first markdown table after ``heading``, as rows of cells (header row first, no separator)."""
    lines = markdown[markdown.index(heading):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return [rows[0], *rows[2:]]


@pytest.fixture(scope="module")
def report(bench_runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    broken = tmp_path_factory.mktemp("broken")
    pitfalls = tmp_path_factory.mktemp("pitfalls")
    conflict = write_pitfalls_run(pitfalls / "conflict", "pitfalls-conflict", "rome",
                                  {"reverse": {"cs_exp": 0.7, "cs_imp": 0.2, "cm": 0.4}})
    round_trip = write_pitfalls_run(pitfalls / "round", "pitfalls-round", "rome",
                                    {"hard": {"succ": 0.5, "d": 0.03, "ir": 0.6, "fr": 0.55}})
    runs = [bench_runs["rome"], bench_runs["memit"], bench_runs["seq"], broken, conflict, round_trip]
    return write_comparison_report(runs, out, command="kedit report a b c d e f --out r")


def test_report_tables_show_the_summaries_numbers(report, bench_runs):
    markdown = report.markdown.read_text()
    every = markdown[markdown.index("## All metrics"):]
    table = _table_after(every, "### Probability protocol")
    assert table[0] == ["run", "ES", "PS", "NS", "S", "EM", "PM", "NM"]
    post = bench_runs["summaries"]["rome"]["probability"]["post"]
    rome = next(row for row in table if row[0] == "rome")
    assert rome[1:] == [format_score(post[k]) for k in ("efficacy_score", "paraphrase_score", "neighborhood_score",
                                                        "score_s", "efficacy_magnitude", "paraphrase_magnitude",
                                                        "neighborhood_magnitude")]
    header = ["run", "success rate", "generalization rate", "drawdown"]
    survey = _table_after(every, "### Survey metrics, token protocol")
    assert survey == [header, ["memit", "0.90", "0.60", "-0.05"]]
    survey = _table_after(every, "### Survey metrics, probability protocol")
    assert survey == [header, ["memit", "0.80", "0.70", "0.10"]]
    seq = _table_after(markdown, "#### memit (sequential)")
    assert [row[0] for row in seq[1:]] == ["0", "1", "2", "4", "8"]
    assert seq[-1][seq[0].index("S")] == format_score(bench_runs["checkpoints"][8]["probability"]["post"]["score_s"])


def test_report_has_the_pitfalls_tables(report):
    markdown = report.markdown.read_text()
    assert _table_after(markdown, "### Knowledge conflict") == [
        ["method", "Reverse CS_exp", "Reverse CS_imp", "Reverse CM"], ["rome", "0.70", "0.20", "0.40"]]
    assert _table_after(markdown, "### Knowledge distortion") == [
        ["method", "Hard Succ ↑", "Hard D ↓", "Hard IR ↓", "Hard FR ↓"], ["rome", "0.50", "0.03", "0.60", "0.55"]]
    assert '<th style="text-align:right">Hard FR ↓</th>' in report.html.read_text()


def test_report_lists_the_unreadable_run_and_writes_pngs_beside_it(report):
    markdown = report.markdown.read_text()
    assert len(report.failures) == 1 and "no run.json" in report.failures[0].reason
    assert f"- `<outside>/{report.failures[0].path.name}`: no run.json" in markdown  # no machine path
    names = sorted(path.name for path in report.plots)
    assert names == ["curves_probability.png", "curves_token.png", "metrics_probability.png",
                     "metrics_survey.png", "metrics_survey_probability.png", "metrics_token.png"]
    for path in report.plots:
        assert path.parent == report.markdown.parent and path.read_bytes().startswith(PNG_SIGNATURE)
        assert f"]({path.name})" in markdown


def test_html_embeds_every_png_and_references_nothing_else(report):
    page = report.html.read_text()
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == len(report.plots)
    embedded = {base64.b64decode(src.removeprefix("data:image/png;base64,")) for src in sources}
    assert embedded == {path.read_bytes() for path in report.plots}
    assert not re.search(r'(?:href|src)="(?!data:image/png;base64,)', page)
    assert "<script" not in page and "Content-Security-Policy" in page


def test_markup_in_run_data_is_escaped(tmp_path):
    page = markdown_to_html("# t\n\n| a |\n| --- |\n| <img src=x onerror=alert(1)> |\n", tmp_path, "t")
    assert "<img" not in page and "&lt;img src=x" in page


def test_report_refuses_to_write_into_a_run_directory(bench_runs):
    result = CliRunner().invoke(app, ["report", str(bench_runs["rome"]), "--out", str(bench_runs["rome"])])
    assert result.exit_code == 2 and "is a run directory" in result.output


def test_cli_exit_status_says_whether_every_run_was_read(bench_runs, tmp_path):
    ok = CliRunner().invoke(app, ["report", str(bench_runs["rome"]), "--out", str(tmp_path / "ok")])
    assert ok.exit_code == 0, ok.output
    assert "read 1 of 1 run(s)" in ok.stdout and (tmp_path / "ok" / "report.html").is_file()
    partial = CliRunner().invoke(app, ["report", str(bench_runs["rome"]), str(tmp_path / "nope"),
                                       "--out", str(tmp_path / "partial")])
    assert partial.exit_code == 1 and "does not exist" in partial.output
    assert "does not exist" in (tmp_path / "partial" / "report.md").read_text()


# --------------------------------------------------------------------------------- in a real browser

# Injected before the page's own Content-Security-Policy (which would refuse an inline script placed
# after it): records load errors and CSP violations, decodes every image by drawing it on a canvas
# (counting pixels that are not near-white, so a blank image shows), lists fetched resources.
PROBE = """<script>
window.__errors = [];
window.addEventListener('error', e => __errors.push(String(e.message || (e.target && (e.target.src || e.target.href)))), true);
document.addEventListener('securitypolicyviolation', e => __errors.push('csp: ' + e.blockedURI + ' ' + e.violatedDirective));
window.addEventListener('load', () => {
  const images = [...document.images].map(img => {
    if (!img.complete || img.naturalWidth === 0) return 'broken';
    const canvas = document.createElement('canvas');
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    const context = canvas.getContext('2d');
    context.drawImage(img, 0, 0);
    const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
    let inked = 0;
    for (let i = 0; i < pixels.length; i += 4) if (pixels[i] + pixels[i + 1] + pixels[i + 2] < 600) inked++;
    return [img.naturalWidth, img.naturalHeight, inked];
  });
  const out = document.createElement('pre');
  out.id = 'probe';
  out.textContent = JSON.stringify({errors: __errors, images: images,
    resources: performance.getEntriesByType('resource').map(r => r.name)});
  document.body.appendChild(out);
});
</script>"""


def _chromium() -> str | None:
    return next((path for name in ("chromium", "chromium-browser", "google-chrome")
                 if (path := shutil.which(name))), None)


def _decoded(data: bytes) -> tuple[int, int, int]:
    """Width, height and near-white-excluded pixel count of a PNG decoded by Pillow (the probe's statistic)."""
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int64)
    return pixels.shape[1], pixels.shape[0], int((pixels.sum(axis=2) < 600).sum())


def _same_image(seen: list | str, expected: tuple[int, int, int]) -> bool:
    # Chromium and Pillow agree exactly here; 0.1% slack allows a browser's colour handling to differ.
    return (seen != "broken" and tuple(seen[:2]) == expected[:2]
            and abs(seen[2] - expected[2]) <= 0.001 * expected[0] * expected[1])


def _load_in_chromium(browser: str, page: str, folder: Path) -> dict:
    """What the probe saw when headless Chromium loaded ``page`` (from a file, as a user would open it)."""
    folder.mkdir()
    probed = folder / "probed.html"
    probed.write_text(page.replace("<head>\n", "<head>\n" + PROBE + "\n", 1), encoding="utf-8")
    result = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={folder / 'profile'}",
         "--dump-dom", probed.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    match = re.search(r'<pre id="probe">(.*?)</pre>', result.stdout, re.S)
    assert match, f"no probe output from Chromium (exit {result.returncode}): {result.stderr[-2000:]}"
    return json.loads(html.unescape(match.group(1)))


def test_html_page_loads_in_headless_chromium_and_every_image_decodes(report, tmp_path):
    browser = _chromium()
    require(browser is not None, "Chromium (Debian package 'chromium') for the HTML report test")
    page = report.html.read_text()
    probe = _load_in_chromium(browser, page, tmp_path / "page")
    assert probe["errors"] == [] and probe["resources"] == []
    # The order of images on the page is the order of their data URIs; each decodes at its PNG's size.
    sources = re.findall(r'src="data:image/png;base64,([^"]*)"', page)
    expected = [_decoded(base64.b64decode(src)) for src in sources]
    assert len(sources) == len(report.plots) and all(e[2] > 1000 for e in expected)  # not blank canvases
    assert all(_same_image(seen, e) for seen, e in zip(probe["images"], expected, strict=True)), probe["images"]

    # The probe can fail: a truncated image (drawn only in part) and a fetched file are reported.
    damaged = page.replace(sources[0], sources[0][: len(sources[0]) // 2], 1).replace(
        "</body>", '<img src="missing.png"></body>', 1)
    probe = _load_in_chromium(browser, damaged, tmp_path / "damaged")
    assert not _same_image(probe["images"][0], expected[0]) and probe["images"][-1] == "broken"
    assert any("missing.png" in error for error in probe["errors"])
