"""Re-render the committed reports under docs/results/ with the current layout (no run is re-run).

    python bench/render_reports.py

* Reports whose run folders are committed are rendered again from those records with
  ``kedit report RUN_DIR ... --out FOLDER`` (the command each page states at its end).
* Reports made from run folders that were never committed (the GPU session's and the small
  end-to-end runs' folders stayed on the machines that ran them) cannot be rendered again: their
  ``report.md`` gets a note under its title saying so, and ``report.html`` is rebuilt from that
  markdown and the PNGs beside it (the same page, with the note). Running this twice changes nothing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kedit.reports.html import markdown_to_html  # noqa: E402

# report folder -> the committed run folders it is rendered from (in this order)
FROM_RECORDS = {
    "docs/results/issue11/report": ["docs/results/issue11/cf-rome", "docs/results/issue11/cf-memit-batch100"],
}
WITHOUT_RECORDS = ("docs/results/bench_200", "docs/results/sequential", "docs/results/pitfalls_200",
                   "docs/results/small_runs")
NOTE = ("> **Rendered before issue 17, from run folders that were not committed** (they stayed on the machines "
        "that ran them; only this page was kept), so it keeps the old layout: provenance first, means without "
        "intervals, all runs in one plot. It cannot be rendered again without those records. docs/BENCHMARKS.md "
        "gives intervals for the comparisons it draws from these numbers (from the means and case counts "
        "alone: `python bench/claim_intervals.py`). The current layout, from committed records: "
        "[docs/results/issue11/report](../issue11/report/report.md).")


def render_from_records(folder: str, runs: list[str]) -> None:
    kedit = Path(sys.executable).with_name("kedit")
    command = [str(kedit) if kedit.is_file() else "kedit", "report", *runs, "--out", folder]
    subprocess.run(command, cwd=REPO, check=True)


def mark_without_records(folder: str) -> None:
    markdown_file = REPO / folder / "report.md"
    lines = markdown_file.read_text(encoding="utf-8").split("\n")
    if NOTE not in lines:
        lines[1:1] = ["", NOTE]  # under the title
        markdown_file.write_text("\n".join(lines), encoding="utf-8")
    markdown = markdown_file.read_text(encoding="utf-8")
    title = markdown.splitlines()[0].removeprefix("# ")
    (REPO / folder / "report.html").write_text(markdown_to_html(markdown, REPO / folder, title), encoding="utf-8")


def main() -> int:
    for folder, runs in FROM_RECORDS.items():
        render_from_records(folder, runs)
    for folder in WITHOUT_RECORDS:
        mark_without_records(folder)
        print(f"{folder}: no committed records; noted on the page, HTML rebuilt from its markdown")
    return 0


if __name__ == "__main__":
    sys.exit(main())
