"""Counting benchmark for the long-tail suite: DuckDB co-occurrence counts on a synthetic PubMed-like corpus.

The corpus is what the counting stage of ``kedit longtail build`` reads (:mod:`kedit.longtail.counting`):
a mentions table ``doc, sentence, entity`` in Parquet parts and a pairs table ``subject, object``.

* Entities follow a Zipf law (probability of rank r proportional to r^-s, ``--zipf``), as concept
  frequencies in PubTator do; each abstract names ``1 + Poisson(distinct - 1)`` distinct concepts
  and mentions them ``distinct + Poisson(mentions - distinct)`` times (about 10 mentions of 5-6
  concepts), each mention in one of ``1 + Poisson(sentences - 1)`` sentences.
* Triples: half are pairs that really co-occur (two concepts of a random document), half two
  Zipf-drawn concepts, so counts spread over all four bins.

The count runs in a child process (``--count-only``) so that its peak resident memory
(``ru_maxrss``) is the counting's own; a thread samples the spill directory's size every 0.1 s.
The result (time, peak memory, peak spill, counts per bin, the machine) is one JSON file, with a
linear projection to PubTator3's ~36M abstracts (time and spill scale with the mention rows).

    flock /tmp/kedit-cpu.lock .venv/bin/python bench/longtail_counting.py --docs 1000000 \
        --out runs/longtail-counting --result docs/results/longtail/counting_1m.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

PUBTATOR3_ABSTRACTS = 36_000_000
PART_DOCS = 100_000


def zipf_sampler(entities: int, exponent: float, rng: np.random.Generator):
    """Draw entity numbers 0..entities-1 with P(r) proportional to (r + 1)^-exponent."""
    cumulative = np.cumsum(1.0 / np.arange(1, entities + 1) ** exponent)
    cumulative /= cumulative[-1]
    return lambda size: np.searchsorted(cumulative, rng.random(size), side="right").astype(np.int32)


def generate(args: argparse.Namespace, folder: Path) -> dict:
    """Write mentions parts and the pairs table; return what was generated."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(args.seed)
    draw = zipf_sampler(args.entities, args.zipf, rng)
    mentions_folder = folder / "mentions"
    mentions_folder.mkdir(parents=True, exist_ok=True)
    rows = 0
    cooccurring: list[np.ndarray] = []
    for part, first in enumerate(range(0, args.docs, PART_DOCS)):
        n = min(PART_DOCS, args.docs - first)
        distinct = 1 + rng.poisson(args.distinct - 1, n)                     # (n,)
        mentions = distinct + rng.poisson(max(args.mentions - args.distinct, 0), n)
        sentences = 1 + rng.poisson(args.sentences - 1, n)
        total = int(mentions.sum())
        doc = np.repeat(np.arange(first, first + n, dtype=np.int32), mentions)   # (total,)
        # the first `distinct` mentions of a document introduce its concepts, the rest repeat one of them
        starts = np.repeat(np.cumsum(mentions) - mentions, mentions)
        position = np.arange(total) - starts
        concept_slot = np.where(position < np.repeat(distinct, mentions), position,
                                (rng.random(total) * np.repeat(distinct, mentions)).astype(np.int64))
        concepts = draw(int(distinct.sum()))
        concept_start = np.repeat(np.cumsum(distinct) - distinct, mentions)
        entity = concepts[concept_start + concept_slot]
        sentence = (rng.random(total) * np.repeat(sentences, mentions)).astype(np.int32)
        table = pa.table({"doc": doc, "sentence": sentence, "entity": entity})
        pq.write_table(table, mentions_folder / f"part-{part:06d}.parquet")
        rows += total
        # co-occurring pairs for the triples: the first two concepts of some documents with two or more
        several = np.flatnonzero(distinct >= 2)
        picked = rng.choice(several, size=min(len(several), args.triples // 2 // max(1, -(-args.docs // PART_DOCS)) + 1),
                            replace=False)
        base = (np.cumsum(distinct) - distinct)[picked]
        cooccurring.append(np.stack([concepts[base], concepts[base + 1]], axis=1))
    real = np.concatenate(cooccurring)[: args.triples // 2]
    random_pairs = np.stack([draw(args.triples - len(real)), draw(args.triples - len(real))], axis=1)
    pairs = np.unique(np.concatenate([real, random_pairs]), axis=0)
    pq.write_table(pa.table({"subject": pairs[:, 0].astype(np.int32), "object": pairs[:, 1].astype(np.int32)}),
                   folder / "pairs.parquet")
    return {"documents": args.docs, "mention_rows": rows, "mentions_per_document": rows / args.docs,
            "entities": args.entities, "zipf_exponent": args.zipf, "pairs": int(len(pairs))}


def _folder_bytes(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):  # a spill file removed between listing and stat
                total += os.path.getsize(os.path.join(root, name))
    return total


def count_only(args: argparse.Namespace) -> None:
    """The child: count, sampling the spill folder; print one JSON line."""
    from kedit.longtail.counting import CountSettings, count_cooccurrences

    folder = Path(args.out)
    spill = folder / "spill"
    shutil.rmtree(spill, ignore_errors=True)
    spill.mkdir(parents=True)
    peak = [0]
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _folder_bytes(spill))
            stop.wait(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    settings = CountSettings(memory_limit=args.memory_limit, threads=args.threads, temp_directory=spill)
    summary = count_cooccurrences(sorted((folder / "mentions").glob("part-*.parquet")), folder / "pairs.parquet",
                                  folder / "counts.parquet", folder / "frequencies.parquet", settings)
    stop.set()
    watcher.join()
    import duckdb

    bins = duckdb.connect().execute(
        f"SELECT count(*) FILTER (documents < 10), count(*) FILTER (documents >= 10 AND documents < 100), "
        f"count(*) FILTER (documents >= 100 AND documents < 1000), count(*) FILTER (documents >= 1000), "
        f"count(*) FILTER (sentences < 10), count(*) FILTER (sentences >= 10 AND sentences < 100), "
        f"count(*) FILTER (sentences >= 100 AND sentences < 1000), count(*) FILTER (sentences >= 1000) "
        f"FROM read_parquet('{folder / 'counts.parquet'}')").fetchone()
    labels = ["[0,10)", "[10,100)", "[100,1000)", "[1000,inf)"]
    print(json.dumps({
        "seconds": summary.seconds, "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "peak_spill_bytes": peak[0], "pairs": summary.pairs, "pairs_in_a_document": summary.pairs_in_a_document,
        "pairs_in_a_sentence": summary.pairs_in_a_sentence, "entities_mentioned": summary.entities,
        "bins": {"document": dict(zip(labels, bins[:4], strict=True)),
                 "sentence": dict(zip(labels, bins[4:], strict=True))},
    }))


def machine() -> dict:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    import duckdb

    return {"cores": os.cpu_count(), "memory_gib": round(memory / 2**30, 1), "python": platform.python_version(),
            "duckdb": duckdb.__version__, "platform": platform.platform(terse=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--entities", type=int, default=200_000)
    parser.add_argument("--zipf", type=float, default=1.0)
    parser.add_argument("--mentions", type=float, default=10.0, help="mean mentions per abstract")
    parser.add_argument("--distinct", type=float, default=5.5, help="mean distinct concepts per abstract")
    parser.add_argument("--sentences", type=float, default=8.0, help="mean sentences per abstract")
    parser.add_argument("--triples", type=int, default=500_000)
    parser.add_argument("--memory-limit", default="2GB")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/longtail-counting")
    parser.add_argument("--result", default=None, help="JSON file for the result (default: print it)")
    parser.add_argument("--count-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.count_only:
        count_only(args)
        return
    folder = Path(args.out)
    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    corpus = generate(args, folder)
    generation = time.perf_counter() - started
    command = [sys.executable, __file__, "--count-only", "--out", str(folder), "--memory-limit", args.memory_limit,
               "--threads", str(args.threads)]
    child = subprocess.run(command, check=True, capture_output=True, text=True)
    counted = json.loads(child.stdout.strip().splitlines()[-1])
    scale = PUBTATOR3_ABSTRACTS / args.docs
    result = {
        "benchmark": "longtail-counting", "corpus": corpus, "generation_seconds": round(generation, 1),
        "settings": {"memory_limit": args.memory_limit, "threads": args.threads, "seed": args.seed,
                     "mentions": args.mentions, "distinct": args.distinct, "sentences": args.sentences},
        "count": counted, "machine": machine(),
        "projection_36m_abstracts": {
            "assumption": "time and spill grow linearly with mention rows (same pairs, same memory limit)",
            "seconds": round(counted["seconds"] * scale), "hours": round(counted["seconds"] * scale / 3600, 2),
            "spill_gib": round(counted["peak_spill_bytes"] * scale / 2**30, 1),
            "mentions_parquet_gib": round(_folder_bytes(folder / "mentions") * scale / 2**30, 1)},
        "command": "bench/longtail_counting.py " + " ".join(
            f"--{key.replace('_', '-')} {value}" for key, value in vars(args).items()
            if key not in {"count_only", "out", "result"}),
    }
    text = json.dumps(result, indent=2)
    if args.result:
        Path(args.result).parent.mkdir(parents=True, exist_ok=True)
        Path(args.result).write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
