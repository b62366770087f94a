"""Issue 15: the tuning table of bench/issue15_tune.sh and the setting it picks, per method.

Reads every run folder under ROOT (default runs/issue15/tune), named <data>-<method>-<setting>, and
prints per method a markdown table of the token-protocol means (reliability, generalization,
locality), the success rate and the median edit time per case on each training set, then the pick:

* KN: the setting with the highest mean of reliability, generalization and locality over both sets;
* FT+EWC: among the settings with a penalty (λ > 0; λ = 0 is FT-M) whose success rate is at least
  0.95 on both sets (the edits still take), the one with the highest mean locality — EWC is there
  to protect what the model knew. (The mean of the three metrics would pick λ = 0, and λ = 1e4,
  where the penalty never acts, next: generalization falls as the penalty grows.)

    python bench/issue15_pick.py [ROOT]
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

METRICS = ("reliability", "generalization", "locality")


def _row(folder: Path) -> dict | None:
    summary_file = folder / "summary.json"
    if not summary_file.is_file():
        return None
    summary = json.loads(summary_file.read_text())
    post = summary["token"]["post"]
    records = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines() if line.strip()]
    seconds = [record["seconds"]["edit"] for record in records]
    return {**{name: post.get(name) for name in METRICS}, "success_rate": summary["survey"]["success_rate"],
            "edit_seconds": statistics.median(seconds), "n": summary["cases"]}


def main(root: Path) -> None:
    table: dict[str, dict[str, dict[str, dict]]] = {}
    for folder in sorted(path for path in root.iterdir() if path.is_dir()):
        data, rest = folder.name.split("-", 1)
        method, setting = ("ft-ewc", rest[len("ft-ewc-"):]) if rest.startswith("ft-ewc-") else rest.split("-", 1)
        if (row := _row(folder)) is not None:
            table.setdefault(method, {}).setdefault(setting, {})[data] = row
    for method, settings in table.items():
        print(f"\n### {method}\n")
        print("| setting | data | n | reliability | generalization | locality | success rate | edit s (median) |")
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        scores, protected = {}, {}
        for setting, by_data in settings.items():
            for data, row in sorted(by_data.items()):
                print(f"| {setting} | {data} | {row['n']} | " + " | ".join(f"{row[k]:.3f}" for k in METRICS)
                      + f" | {row['success_rate']:.3f} | {row['edit_seconds']:.1f} |")
            if len(by_data) == 2:
                scores[setting] = statistics.fmean(row[k] for row in by_data.values() for k in METRICS)
                if all(row["success_rate"] >= 0.95 for row in by_data.values()) and not setting.endswith("-l0"):
                    protected[setting] = statistics.fmean(row["locality"] for row in by_data.values())
        if scores:
            listed = ", ".join(f"{s} {v:.3f}" for s, v in sorted(scores.items(), key=lambda item: -item[1]))
            print(f"\nmean of reliability, generalization, locality over both sets: {listed}")
        rule = protected if method == "ft-ewc" else scores
        if method == "ft-ewc" and protected:
            listed = ", ".join(f"{s} {v:.3f}" for s, v in sorted(protected.items(), key=lambda item: -item[1]))
            print(f"\nλ > 0 with success rate >= 0.95 on both sets, mean locality: {listed}")
        if rule:
            print(f"\npick: **{max(rule, key=rule.get)}**")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs/issue15/tune"))
