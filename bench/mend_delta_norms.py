"""How large each stored edit of a sequential run is against the weights it changes.

For the first K stored edits of a run folder (runs/seq/mend/edits/NNNNN): per edit, the largest
‖ΔW‖_F / ‖W‖_F over the weights it touches (W the unedited weight), and the same for the sum of the
edits so far. Explains why a sequence collapses when single edits do not.

    python bench/mend_delta_norms.py runs/seq/mend --k 10 --out docs/results/issue13/seq_mend_delta_norms.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import kedit
from kedit.edits import load_edit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    lm = kedit.load_model(args.model)
    norms = {name: float(p.detach().norm()) for name, p in lm.model.named_parameters()}
    total: dict = {}
    rows = []
    for index in range(args.k):
        edit = load_edit(args.run / "edits" / f"{index:05d}")
        single = {}
        for name in edit.touches():
            delta = edit.deltas[name]  # dense, one parameter at a time
            total[name] = total.get(name, 0) + delta
            single[name] = float(delta.norm()) / norms[name]
        worst = max(single, key=single.get)
        cumulative = {name: float(value.norm()) / norms[name] for name, value in total.items()}
        rows.append({"edit": index + 1, "max_relative_norm": single[worst], "weight": worst,
                     "cumulative_max_relative_norm": max(cumulative.values())})
        print(f"edit {index + 1:3d}: max ‖ΔW‖/‖W‖ {single[worst]:.3f} ({worst}); "
              f"sum so far {max(cumulative.values()):.3f}")
    args.out.write_text(json.dumps({"run": args.run.name, "edits": rows}, indent=1))


if __name__ == "__main__":
    main()
