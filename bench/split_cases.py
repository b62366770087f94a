"""Write a slice of a dataset's cases as a kedit cases file (``--data cases:FILE``), e.g. a validation
split taken from the end of a file so that it never meets the evaluation cases taken from its start.

    python bench/split_cases.py counterfact-distracting:../shared/data/portability-locality/locality/\
distracting_neighbor/counterfact_distracting_neighbor.json --start -50 --out runs/splits/dn-val.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from kedit.data.registry import load_dataset
from kedit.paths import atomic_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="NAME:PATH, as kedit bench --data")
    parser.add_argument("--start", type=int, required=True, help="first case (negative: from the end)")
    parser.add_argument("--stop", type=int, default=None, help="one past the last case (default: the end)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    name, _, path = args.data.partition(":")
    cases = load_dataset(name, path).cases[args.start:args.stop]
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps([case.to_dict() for case in cases], ensure_ascii=False, indent=1), encoding="utf-8")
    print(f"{len(cases)} case(s) -> {args.out}")


if __name__ == "__main__":
    main()
