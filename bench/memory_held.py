"""The memory a GRACE or WISE sequential run holds after its edits: replays the run's stored edits
on a fresh load of the model (the runner's own resume path) and measures what the memory is.

    python bench/memory_held.py --run runs/issue15/zsre-grace-seq1000 --out docs/results/issue15/grace-memory.json

Reports the number of edits replayed, the replay time, the size of the memory itself (GRACE: the
codebook's entries, keys, values and radii; WISE: the side memory being written, stored shards and
the merged memory, as kept sparse, and the dense matrices the router builds to answer), the bytes
the stored edit folders take on disk, and the process's peak resident memory before and after.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _tensor_bytes(*tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def grace_memory(lm, stack) -> dict:
    from kedit.methods.grace import GRACEAdaptor

    path = stack.edits[-1].swaps[0].path
    adaptor = lm.module(path)
    if not isinstance(adaptor, GRACEAdaptor):
        raise SystemExit(f"{path} holds no GRACE adaptor after the replay")
    keys, values, radii = adaptor.stacked()
    return {"path": path, "entries": len(adaptor.entries), "key_size": int(keys.shape[1]),
            "value_size": int(values.shape[1]), "codebook_bytes": _tensor_bytes(keys, values, radii),
            "radius_min": float(radii.min()), "radius_median": float(radii.median()),
            "radius_max": float(radii.max())}


def wise_memory(lm) -> dict:
    from kedit.methods.wise import WISERouter

    router = lm.routers[-1]
    if not isinstance(router, WISERouter):
        raise SystemExit("the model's latest router is not a WISE memory after the replay")
    state = router.state
    sides = [side for side in (state.current, *state.stored, state.merged) if side is not None]
    weights, thresholds = router.memories()
    return {"path": router.settings.path, "edits": state.count, "retrieve": router.settings.retrieve,
            "current_entries": 0 if state.current is None else int(state.current.indices.numel()),
            "stored_memories": len(state.stored), "merged": state.merged is not None,
            "sparse_bytes": sum(_tensor_bytes(side.indices, side.values) for side in sides),
            "dense_routing_bytes": _tensor_bytes(*weights), "thresholds": thresholds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a sequential kedit bench run directory")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from kedit.edits import EditStack
    from kedit.methods import load_edit
    from kedit.models.loading import load_model
    from kedit.runs.portable import portable_path
    from kedit.runs.resume import stored_edit_dirs

    lm = load_model(args.model)
    folders = stored_edit_dirs(args.run)
    if not folders:
        raise SystemExit(f"{args.run} holds no stored edits")
    before = _peak_mib()
    started = time.perf_counter()
    stack = EditStack(lm)
    for folder in folders:
        stack.push(load_edit(folder))
    seconds = time.perf_counter() - started
    method = stack.edits[-1].method
    memory = grace_memory(lm, stack) if method == "grace" else wise_memory(lm)
    result = {"run": portable_path(args.run), "method": method, "edits_replayed": len(folders),
              "replay_seconds": seconds, "memory": memory,
              "stored_edit_bytes": sum(f.stat().st_size for folder in folders for f in folder.iterdir()),
              "peak_rss_mib_before_replay": before, "peak_rss_mib_after_replay": _peak_mib()}
    stack.unwind()
    stack.verify_restored()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
