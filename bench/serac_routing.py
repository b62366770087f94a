"""How often SERAC's scope classifier routes each kind of probe to the counterfactual model.

For each case (edited alone), the share of its rephrases, locality prompts and portability prompts
whose score s = max_j exp(−scale·d_j) passes the threshold; tells a locality loss caused by routing
(an out-of-scope prompt sent to the counterfactual) from one caused by the counterfactual's answer.

    python bench/serac_routing.py --artifact runs/serac-zsre \
        --data knowedit:../shared/data/knowedit/ZsRE/ZsRE-test-all.json --n 100
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from kedit.data.bench_data import load_bench_data
    from kedit.methods import method_for
    from kedit.models.loading import load_model

    lm = load_model(args.model)
    method = method_for(lm, "serac")
    hparams = method.default_hparams(lm, overrides={"artifact": args.artifact})
    routed: dict[str, list[float]] = {"rephrase": [], "locality": [], "portability": []}
    sims: dict[str, list[float]] = {key: [] for key in routed}
    for case in load_bench_data(args.data, args.n, 0).cases:
        edit = method.compute(lm, [case.request], hparams)
        edit.apply(lm)
        try:
            router = lm.routers[-1]
            for kind, prompts in (("rephrase", case.rephrases), ("locality", [p.prompt for p in case.locality]),
                                  ("portability", [p.prompt for p in case.portability])):
                if not prompts:
                    continue
                scores, _ = router.scores(list(prompts))
                routed[kind].append(float((scores > router.threshold).float().mean()))
                sims[kind].extend(float(s) for s in scores)
        finally:
            edit.revert(lm)
    result = {"cases": args.n, "threshold": hparams.route_threshold,
              "routed_share": {k: statistics.fmean(v) for k, v in routed.items() if v},
              "median_score": {k: statistics.median(v) for k, v in sims.items() if v}}
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
