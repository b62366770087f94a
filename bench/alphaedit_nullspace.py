"""AlphaEdit's null-space dimension against its (absolute) threshold, per edited layer.

Prints the markdown table of docs/METHODS.md for a model (statistics cached or collected):

    python bench/alphaedit_nullspace.py --model smollm2-135m --layers 4 5 6 7 8
"""

from __future__ import annotations

import argparse

import torch

import kedit
from kedit.methods.alphaedit import null_space_dimensions
from kedit.stats import second_moments

THRESHOLDS = (1e-3, 1e-2, 2e-2, 5e-2, 1e-1, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--layers", type=int, nargs="+", default=[4, 5, 6, 7, 8])
    parser.add_argument("--tokens", type=int, default=100_000)
    args = parser.parse_args()
    lm = kedit.load_model(args.model)
    moments = second_moments(lm, args.layers, None, args.tokens)
    print(f"d_k = {moments[args.layers[0]].shape[0]}, C from {args.tokens} tokens of the default corpus\n")
    print("| layer | " + " | ".join(f"{t:g}" for t in THRESHOLDS) + " | eigenvalues min / median / max |")
    print("|---:|" + "---:|" * len(THRESHOLDS) + "---|")
    for layer in args.layers:
        values = torch.linalg.eigvalsh(moments[layer].double())
        dims = null_space_dimensions(moments[layer], THRESHOLDS)
        print(f"| {layer} | " + " | ".join(map(str, dims))
              + f" | {values.min():.1e} / {values.median():.1e} / {values.max():.2f} |")


if __name__ == "__main__":
    main()
