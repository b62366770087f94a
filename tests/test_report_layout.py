"""The report's layout (issue 17): results first with bootstrap intervals, panels per dataset, provenance last.

The run directories are the ones tests/test_report.py builds (real evaluate() records on a tiny
model), here on two datasets, with two runs on the same cases (paired) and a log-spaced
sequential run whose checkpoints keep their records (bands).
"""

from __future__ import annotations

import html
import io
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import LineCollection, PolyCollection
from PIL import Image

from kedit.evaluate.evaluation import summarize
from kedit.reports.comparison import PROBABILITY, SURVEY, TOKEN
from kedit.reports.comparison_page import PROVENANCE_HEADING, RESULTS_HEADING
from kedit.reports.headline import (
    Estimates,
    IntervalSettings,
    curve_lines,
    headline_blocks,
    log_spaced,
    paired_rows,
)
from kedit.reports.intervals import bootstrap, harmonic_of_column_means, paired_difference
from kedit.reports.palette import (
    FALLBACK_COLOURS,
    METHOD_COLOURS,
    method_colour,
    stable_order,
    variant_numbers,
)
from kedit.reports.plots import curves_figure, dataset_figure
from kedit.reports.report_writer import write_comparison_report
from kedit.reports.runs import read_runs
from tests.requirements import require
from tests.test_report import _chromium, _table_after, evaluator, write_bench_run  # noqa: F401  (fixture)

SETTINGS = IntervalSettings(resamples=400, seed=3)
CF, ZSRE = "cf-like", "zsre-like"


@pytest.fixture(scope="module")
def layout_runs(evaluator, tmp_path_factory) -> dict:  # noqa: F811
    root = tmp_path_factory.mktemp("layout-runs")
    small, large, medium = evaluator.records(0.05, seed=1), evaluator.records(2.0, seed=2), evaluator.records(0.6, seed=4)
    checkpoints = [(n, evaluator.records(0.3 * n, seed=5)) for n in (0, 1, 2, 5)]
    same = {"cases_sha": "ee" * 32, "data_name": CF}
    command = ("kedit bench --data tiny:/tmp/machine/data/tiny.json --out /home/someone/runs/x "
               "--hparams /root/h.yaml")
    paths = {
        # given out of the fixed method order on purpose: MEMIT before ROME
        "memit": write_bench_run(root / "memit", large, "memit", **same, command=command),
        "rome": write_bench_run(root / "rome", small, "rome", **same),
        "ft": write_bench_run(root / "ft", medium, "ft-l", **same),
        "zsre-rome": write_bench_run(root / "zsre-rome", medium, "rome", data_name=ZSRE, data_sha="77" * 32),
        "seq": write_bench_run(root / "seq", checkpoints[-1][1], "alphaedit", mode="sequential",
                               mode_spec="sequential:log", data_name=ZSRE, data_sha="77" * 32,
                               curve=[(n, summarize(r)) for n, r in checkpoints],
                               curve_records={n: r for n, r in checkpoints if n in (1, 2)}),
    }
    # the final records, as a sequential run writes them: measured after all 5 edits
    final = [{**r, "edit": {"n_edits_at_evaluation": 5}} for r in checkpoints[-1][1]]
    (paths["seq"] / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in final))
    return {**paths, "records": {"memit": large, "rome": small, "ft": medium}, "checkpoints": dict(checkpoints)}


@pytest.fixture(scope="module")
def runs(layout_runs):
    found, failures = read_runs([layout_runs[name] for name in ("memit", "rome", "ft", "zsre-rome", "seq")])
    assert failures == []
    return found


@pytest.fixture(scope="module")
def page(layout_runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("layout-report")
    folders = [layout_runs[name] for name in ("memit", "rome", "ft", "zsre-rome", "seq")]
    return write_comparison_report([*folders, out.parent / "missing"], out,
                                   command=f"kedit report {' '.join(map(str, folders))} --out {out}",
                                   settings=SETTINGS)


def _post(records, protocol, name):
    return np.array([r[protocol]["post"][name] for r in records if r[protocol]["post"].get(name) is not None])


# ------------------------------------------------------------------------------------------- palette


def test_methods_have_fixed_colours_and_an_order_that_does_not_depend_on_the_report():
    assert method_colour("rome") == METHOD_COLOURS["rome"] and method_colour("MEMIT") == METHOD_COLOURS["memit"]
    unknown = method_colour("toy-editor")
    assert unknown in FALLBACK_COLOURS and unknown == method_colour("toy-editor")  # no salted hash()
    assert not set(FALLBACK_COLOURS) & set(METHOD_COLOURS.values())
    assert "#7f7f7f" not in {*FALLBACK_COLOURS, *METHOD_COLOURS.values()}  # grey is the unedited model's
    methods = ["zeta", "ft-l", "memit", "rome", "alpha", "memit"]
    assert [methods[i] for i in stable_order(methods)] == ["rome", "memit", "memit", "ft-l", "alpha", "zeta"]
    assert variant_numbers(["memit", "rome", "memit", "memit"]) == [0, 0, 1, 2]


# ------------------------------------------------------------------------------------------ numbers


def test_headline_cells_are_the_summary_means_with_the_bootstrap_of_the_records(runs, layout_runs):
    blocks = headline_blocks(runs, TOKEN, TOKEN.headline, Estimates(SETTINGS))
    assert [block.label for block in blocks] == [CF, ZSRE]
    cf = blocks[0]
    assert [row.label for row in cf.rows] == ["unedited tiny-llama", "rome", "memit", "ft-l"]  # fixed order
    rome = cf.rows[1].cells["reliability"]
    by_hand = bootstrap(_post(layout_runs["records"]["rome"], "token", "reliability"), **SETTINGS.kwargs())
    assert rome.interval == by_hand and rome.value == pytest.approx(by_hand.estimate)
    assert cf.rows[0].cells["locality"].value is None  # locality has no unedited state
    # S: harmonic mean of the three means, bootstrapped over cases as three columns
    s = headline_blocks(runs, PROBABILITY, PROBABILITY.headline, Estimates(SETTINGS))[0].rows[2].cells["score_s"]
    columns = np.column_stack([_post(layout_runs["records"]["memit"], "probability", k)
                               for k in ("efficacy_score", "paraphrase_score", "neighborhood_score")])
    assert s.interval == bootstrap(columns, harmonic_of_column_means, **SETTINGS.kwargs())


def test_a_survey_rate_is_bootstrapped_over_per_case_indicators(evaluator, tmp_path):  # noqa: F811
    records = evaluator.records(2.0, seed=2)
    folder = write_bench_run(tmp_path / "r", records, "memit", survey={"success_rate": 0.0})
    (run,), _ = read_runs([folder])
    perfect = (_post(records, "token", "reliability") == 1.0).astype(float)
    cell = Estimates(SETTINGS).get(run, SURVEY, "success_rate")
    # a recorded rate the records do not reproduce keeps its value and gets no interval
    assert cell.value == 0.0 and (cell.interval is None) == (perfect.mean() != 0.0)


def test_runs_on_the_same_cases_get_paired_differences(runs, layout_runs):
    blocks = headline_blocks(runs, TOKEN, TOKEN.headline, Estimates(SETTINGS))
    pairs = paired_rows(blocks, TOKEN, TOKEN.headline, SETTINGS)
    assert [(p.first.label, p.second.label) for p in pairs] == [("rome", "memit"), ("rome", "ft-l"),
                                                                ("memit", "ft-l")]
    records = layout_runs["records"]
    by_hand = paired_difference(_post(records["rome"], "token", "locality"),
                                _post(records["memit"], "token", "locality"), **SETTINGS.kwargs())
    assert pairs[0].differences["locality"] == by_hand and pairs[0].n == 3


def test_sequential_curves_have_intervals_where_checkpoints_kept_their_cases(runs, layout_runs):
    (line,) = curve_lines(runs, PROBABILITY, "efficacy_score", Estimates(SETTINGS))
    with_interval = {n: estimate.interval is not None for n, estimate in line.points}
    # 1 and 2 carry their records in curve.jsonl, 5 is the final results.jsonl, 0 has none
    assert with_interval == {0: False, 1: True, 2: True, 5: True}
    at_two = dict(line.points)[2].interval
    values = _post(layout_runs["checkpoints"][2], "probability", "efficacy_score")
    assert at_two == bootstrap(values, **SETTINGS.kwargs())
    assert log_spaced(runs) and line.method == "alphaedit"


# ------------------------------------------------------------------------------------------- plots


def test_bar_figure_has_a_panel_per_dataset_error_bars_and_the_unedited_model_as_lines(runs):
    blocks = headline_blocks(runs, TOKEN, TOKEN.headline, Estimates(SETTINGS))
    specs = [spec for spec in TOKEN.headline if spec.key != "portability"]
    figure = dataset_figure(blocks, specs, "token")
    panels = [axes for axes in figure.axes if axes.get_title()]
    assert [axes.get_title() for axes in panels] == [CF, ZSRE]
    assert panels[0].get_shared_y_axes().joined(panels[0], panels[1])
    cf = panels[0]
    bars = [patch for patch in cf.patches]
    assert len(bars) == 3 * len(specs)  # 3 edited runs, no bar for the unedited model
    colours = {tuple(round(c, 3) for c in patch.get_facecolor()[:3]) for patch in bars}
    expected = {tuple(round(int(h[i:i + 2], 16) / 255, 3) for i in (1, 3, 5)) for h in
                (METHOD_COLOURS["rome"], METHOD_COLOURS["memit"], METHOD_COLOURS["ft-l"])}
    assert colours == expected
    grey = [c for c in cf.collections if isinstance(c, LineCollection) and c.get_label() == "unedited tiny-llama"]
    assert len(grey) == 1  # the unedited model: a line, labelled once
    error_bars = [c for c in cf.collections if isinstance(c, LineCollection) and c.get_label() != "unedited tiny-llama"
                  and len(c.get_segments()) == 1 and c.get_segments()[0][0][0] == c.get_segments()[0][1][0]]
    assert len(error_bars) == 3 * len(specs)  # one vertical error bar per bar


def test_curves_use_a_log_axis_for_log_spaced_runs_and_draw_bands(runs):
    estimates = Estimates(SETTINGS)
    panels = [(spec.label, curve_lines(runs, PROBABILITY, spec.key, estimates)) for spec in PROBABILITY.headline]
    figure = curves_figure(panels, "curves", log_x=True)
    first = figure.axes[0]
    assert first.get_xscale() == "log" and first.get_title() == "ES"
    assert any(isinstance(c, PolyCollection) for c in first.collections)  # the band over checkpoints 1-5
    assert curves_figure(panels, "curves", log_x=False).axes[0].get_xscale() == "linear"


# --------------------------------------------------------------------------------------------- page


def test_page_opens_with_the_results_and_ends_with_provenance_and_commands(page, layout_runs):
    markdown = page.markdown.read_text()
    order = [markdown.index(h) for h in (RESULTS_HEADING, "## Plots", "## Sequential editing", "## All metrics",
                                         PROVENANCE_HEADING, "### Commands", "### Runs that could not be read")]
    assert order == sorted(order)
    assert markdown.index("| dataset | method |") < markdown.index("## Plots")  # the headline table comes first
    assert markdown.count("400 resamples") == 1  # the interval settings are stated once
    table = _table_after(markdown, "### Token protocol")
    assert table[0] == ["dataset", "method", "reliability", "generalization", "locality", "portability"]
    assert [row[:2] for row in table[1:5]] == [[CF, "unedited tiny-llama"], ["", "rome"], ["", "memit"], ["", "ft-l"]]
    cells = {row[1]: row[2] for row in table[1:5]}
    values = {name: _post(layout_runs["records"][key], "token", "reliability").mean()
              for name, key in (("rome", "rome"), ("memit", "memit"), ("ft-l", "ft"))}
    best = max(round(v, 2) for v in values.values())
    for name, value in values.items():
        assert cells[name].startswith(f"**{value:.2f}**" if round(value, 2) == best else f"{value:.2f} [")
    assert "### Paired differences" in markdown and "| rome − memit | 3 |" in markdown
    assert "![Token protocol (EasyEdit): mean after editing, one panel per dataset](metrics_token.png)" in markdown


def test_page_holds_no_path_of_the_machine(page):
    for path in (page.markdown, page.html):
        text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", path.read_text())
        for machine in ("/tmp/", "/root/", "/home/", "/work/"):
            assert machine not in text, f"{path.name} holds {machine}"
    markdown = page.markdown.read_text()
    assert "--data 'tiny:<outside>/tiny.json'" in markdown and "--hparams '<outside>/h.yaml'" in markdown


# ----------------------------------------------------------------------------- the first screen, in Chromium

VIEWPORT = (1280, 800)
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}")
# Where the headline table and the provenance heading are on the page, read after the page has loaded.
LAYOUT_PROBE = """<script>
window.addEventListener('load', () => {
  const box = e => { if (!e) return null; const r = e.getBoundingClientRect();
                     return [r.left + scrollX, r.top + scrollY, r.right + scrollX, r.bottom + scrollY]; };
  const headings = [...document.querySelectorAll('h2')];
  const results = headings.find(h => h.textContent.trim() === 'Results');
  const provenance = headings.find(h => h.textContent.trim() === 'Provenance');
  const table = results && [...document.querySelectorAll('table')].find(
    t => results.compareDocumentPosition(t) & Node.DOCUMENT_POSITION_FOLLOWING);
  const out = document.createElement('pre');
  out.id = 'layout';
  out.textContent = JSON.stringify({viewport: [innerWidth, innerHeight], results: box(results), table: box(table),
    provenance: box(provenance), header: table ? [...table.querySelectorAll('th')].map(th => th.textContent) : null});
  document.body.appendChild(out);
});
</script>"""


def _chromium_run(browser: str, folder: Path, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={folder / 'profile'}", *arguments],
                          capture_output=True, text=True, timeout=120)


def _first_screen(browser: str, html_file: Path, folder: Path) -> tuple[dict, np.ndarray]:
    """The headline table's box (from the DOM) and a screenshot of the first screen (RGB array)."""
    folder.mkdir()
    probed = folder / "probed.html"
    probed.write_text(html_file.read_text().replace("<head>\n", "<head>\n" + LAYOUT_PROBE + "\n", 1), encoding="utf-8")
    dom = _chromium_run(browser, folder, "--dump-dom", probed.as_uri())
    match = re.search(r'<pre id="layout">(.*?)</pre>', dom.stdout, re.S)
    assert match, f"no layout probe output from Chromium (exit {dom.returncode}): {dom.stderr[-2000:]}"
    layout = json.loads(html.unescape(match.group(1)))
    shot = folder / "first-screen.png"
    result = _chromium_run(browser, folder, f"--screenshot={shot}", html_file.resolve().as_uri())
    assert shot.is_file(), f"Chromium wrote no screenshot (exit {result.returncode}): {result.stderr[-2000:]}"
    return layout, np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("RGB"), dtype=np.int64)


def check_first_screen(browser: str, html_file: Path, folder: Path) -> None:
    """The headline table lies within the first 1280×800 screen, before the provenance, and is drawn there."""
    layout, pixels = _first_screen(browser, html_file, folder)
    width, height = VIEWPORT
    assert pixels.shape[:2] == (height, width)
    assert layout["table"] is not None and layout["header"][:2] == ["dataset", "method"], layout
    left, top, right, bottom = layout["table"]
    assert 0 <= left < right <= width and 0 <= top < bottom <= height, f"headline table at {layout['table']}"
    assert layout["provenance"] is not None and layout["provenance"][1] > bottom
    inked = pixels.sum(axis=2) < 600  # not near-white
    assert inked.mean() > 0.01, "the first screen is blank"
    region = inked[int(top):int(bottom), int(left):int(right)]
    # the table's borders and digits: a real share of its box is ink, in more than one shade
    assert region.mean() > 0.03, f"nothing drawn where the headline table is ({region.mean():.4f} inked)"
    assert len(np.unique(pixels[int(top):int(bottom), int(left):int(right)].reshape(-1, 3), axis=0)) > 10


def test_the_first_screen_in_headless_chromium_shows_the_headline_table(page, tmp_path):
    browser = _chromium()
    require(browser is not None, "Chromium (Debian package 'chromium', `make chromium`) for the first-screen test")
    check_first_screen(browser, page.html, tmp_path / "page")


COMMITTED_REPORTS = sorted(Path(__file__).resolve().parents[1].glob("docs/results/**/report.html"))


@pytest.mark.parametrize("report", [p for p in COMMITTED_REPORTS if RESULTS_HEADING in p.with_suffix(".md").read_text()],
                         ids=lambda p: str(p.parent.name))
def test_committed_reports_open_with_their_headline_table(report, tmp_path):
    browser = _chromium()
    require(browser is not None, "Chromium (Debian package 'chromium', `make chromium`) for the first-screen test")
    check_first_screen(browser, report, tmp_path / "page")
