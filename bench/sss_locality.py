"""SSS per case against each case's locality loss (the SSS paper's hypothesis: edits in sparser
regions of the semantic space disturb their neighbours less).

For every edited case of a ``kedit bench`` run, SSS is computed on the UNEDITED model as SPEC C
defines the term: Σ (∂L_edit/∂h)² over the final hidden states h (after the final norm, all
positions), L_edit the masked mean NLL of the new target after the prompt (teacher forced). It is
set against the case's locality loss in the run: 1 − token locality (argmax agreement of the
locality prompts with the unedited model) and 1 − NS where the probability protocol has it.
Correlations (Spearman and Pearson) come with 95 % percentile-bootstrap intervals over cases
(``kedit.reports.intervals``, seeded).

    python bench/sss_locality.py --run runs/cf-ft-l --out docs/results/issue13/sss_locality_ft-l.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def case_sss(lm, request) -> float:
    from kedit.methods.losses import per_request_nll, sss_penalty
    from kedit.methods.targets import target_batch
    from kedit.models.tracing import final_hidden, logits_from_hidden

    inputs = target_batch(lm, [(request.text, request.target_new)])
    with torch.enable_grad():
        hidden = final_hidden(lm, inputs.batch).detach().requires_grad_(True)
        nll = per_request_nll(logits_from_hidden(lm, hidden[:, -inputs.window:]), inputs.labels, inputs.mask)
        return float(sss_penalty(nll.sum(), hidden).detach())


def ranks(samples: np.ndarray) -> np.ndarray:
    """Average ranks along axis -2 (cases), ties sharing their mean rank; samples (..., n, k).

    rank(x_i) = #{x_j < x_i} + (#{x_j = x_i} + 1) / 2: quadratic in n, fine for a few hundred cases
    (the bootstrap hands over 1,000 resamples at a time), and no scipy needed.
    """
    columns = np.moveaxis(samples, -1, 0)  # (k, ..., n)
    less = (columns[..., None, :] < columns[..., :, None]).sum(-1)
    equal = (columns[..., None, :] == columns[..., :, None]).sum(-1)
    return np.moveaxis(less + (equal + 1) / 2, 0, -1)


def pearson(samples: np.ndarray) -> np.ndarray:
    """(R, n, 2) → (R,) Pearson correlation of the two columns per resample (NaN where one is constant)."""
    x, y = samples[..., 0], samples[..., 1]
    x = x - x.mean(-1, keepdims=True)
    y = y - y.mean(-1, keepdims=True)
    denominator = np.sqrt((x * x).sum(-1) * (y * y).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (x * y).sum(-1) / denominator, 0.0)


def spearman(samples: np.ndarray) -> np.ndarray:
    return pearson(ranks(samples))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a kedit bench run directory (single mode)")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from kedit.models.loading import load_model
    from kedit.reports.intervals import bootstrap
    from kedit.requests import EditRequest
    from kedit.runs.files import read_lines

    records = [r for r in read_lines(args.run / "results.jsonl") if r.get("edited")]
    lm = load_model(args.model)
    rows = []
    for record in records:
        request = EditRequest(**{k: v for k, v in record["request"].items() if k != "extra_targets"})
        token = record["token"]["post"]
        probability = (record.get("probability") or {}).get("post") or {}
        rows.append({"case_id": record.get("case_id"), "sss": case_sss(lm, request),
                     "locality_loss": None if token.get("locality") is None else 1 - token["locality"],
                     "ns_loss": None if probability.get("neighborhood_score") is None
                     else 1 - probability["neighborhood_score"]})
    result = {"run": args.run.name, "model": args.model, "cases": len(rows), "correlations": {}}
    for loss in ("locality_loss", "ns_loss"):
        pairs = np.array([(row["sss"], row[loss]) for row in rows if row[loss] is not None])
        if len(pairs) < 3:
            continue
        for name, statistic in (("spearman", spearman), ("pearson", pearson)):
            interval = bootstrap(pairs, statistic)
            result["correlations"][f"{name}:sss~{loss}"] = {
                "estimate": interval.estimate, "low": interval.low, "high": interval.high,
                "n": interval.n, "resamples": interval.resamples, "seed": interval.seed}
    result["per_case"] = rows
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result["correlations"], indent=1))


if __name__ == "__main__":
    main()
