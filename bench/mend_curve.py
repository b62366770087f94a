"""Validation curves of `kedit train` runs as a markdown table: one row per validation.

    python bench/mend_curve.py runs/mend-sweep/lr-*          # the MEND learning-rate sweep
    python bench/mend_curve.py runs/serac-zsre --every 100   # any trained editor's folder
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def validations(folder: Path) -> list[dict]:
    rows = []
    for line in (folder / "train-log.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if "validation" in entry:
            rows.append({"step": entry["step"], **entry["validation"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--every", type=int, default=1, help="show every K-th validation")
    args = parser.parse_args()
    for folder in args.folders:
        rows = validations(folder)
        if not rows:
            continue
        keys = [key for key in rows[-1] if key != "step"]
        print(f"\n{folder.name}\n\n| step | " + " | ".join(keys) + " |\n|---:|" + "---:|" * len(keys))
        best = min(rows, key=lambda row: row["val_loss"])
        for index, row in enumerate(rows):
            if index % args.every and row is not best and index != len(rows) - 1:
                continue
            cells = [f"{row[key]:.3f}" if isinstance(row.get(key), float) else "–" for key in keys]
            marker = " (best)" if row is best else ""
            print(f"| {row['step']}{marker} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
