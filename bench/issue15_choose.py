"""Choose GRACE's or WISE's SmolLM2 settings from their validation sweep (derived-10k runs of
bench/grace_sweep.sh / bench/wise_sweep.sh) by one fixed rule, and write them as a hyperparameter file.

    python bench/issue15_choose.py --sweep runs/issue15/sweep-grace --keys layer eps_init n_iter \
        --out runs/issue15/chosen-grace.yaml

Rule: the run with the highest mean of token reliability, generalization and locality (the unedited
model's agreement) on the state after all its sequential edits; ties go to the cheaper run (fewer
edit seconds). Prints every run's numbers, so the table of the choice can be quoted.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

METRICS = ("reliability", "generalization", "locality")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", type=Path, required=True, help="folder of kedit bench run folders")
    parser.add_argument("--keys", nargs="+", required=True, help="the hyperparameters the sweep varied")
    parser.add_argument("--out", type=Path, required=True, help="YAML file of the chosen values")
    args = parser.parse_args()

    rows = []
    for run in sorted(args.sweep.iterdir()):
        summary_file, run_file = run / "summary.json", run / "run.json"
        if not summary_file.is_file() or not run_file.is_file():
            continue
        summary, hparams = json.loads(summary_file.read_text()), json.loads(run_file.read_text())["hparams"]
        post = summary["token"]["post"]
        values = {metric: float(post[metric]) for metric in METRICS}
        rows.append({"run": run.name, **values, "mean": sum(values.values()) / len(values),
                     "edit_seconds": float(summary["seconds"]["edits"]) / summary["cases"],
                     "chosen": {key: hparams[key] for key in args.keys}})
    if not rows:
        raise SystemExit(f"{args.sweep} holds no finished runs")
    for row in rows:
        print(f"{row['run']:<28} rel {row['reliability']:.3f} gen {row['generalization']:.3f} "
              f"loc {row['locality']:.3f} mean {row['mean']:.3f} s/edit {row['edit_seconds']:.1f}")
    best = max(rows, key=lambda row: (round(row["mean"], 6), -row["edit_seconds"]))
    print(f"chosen: {best['run']} {best['chosen']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(f"{key}: {json.dumps(value)}\n" for key, value in best["chosen"].items()),
                        encoding="utf-8")


if __name__ == "__main__":
    main()
