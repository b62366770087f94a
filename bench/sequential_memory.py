"""Peak memory and disk of long sequential MEND runs (``kedit bench --mode sequential:log``).

Each measurement is one ``python -m kedit bench --method mend --mode sequential:log --n N`` child
process; its peak resident set size comes from ``os.wait4`` (the kernel's ru_maxrss of that child
alone) and the disk use is the size of its run folder (and of ``edits/``, the stored edits a resume
replays). The run folder's ``edits/`` is deleted afterwards unless ``--keep-edits`` (before the
low-rank deltas, 1,000 MEND edits of SmolLM2 took 32 GB there).

Two setups:

* ``tiny``: a random 4-block Llama with SmolLM2-135M's MLP shape (hidden 576, intermediate 1536:
  MEND's nine edited matrices are exactly SmolLM2's) and the tests' tiny tokenizer, a MEND editor
  meta-trained on it for a few steps, and synthetic CounterFact-style cases; everything is written
  under ``--out``/setup by this script (``kedit train mend`` on the saved model folder).
* ``real``: any model, MEND artifact and dataset (SmolLM2-135M with a trained editor such as
  runs/mend-mixed).

``--kedit-src DIR`` runs the children with another copy of the kedit package first on PYTHONPATH,
e.g. the commit before the low-rank deltas, for a before/after table::

    git archive cab532d kedit | (mkdir -p runs/kedit-before && tar -x -C runs/kedit-before)
    python bench/sequential_memory.py tiny --out runs/seqmem-tiny --ns 10 100 1000
    python bench/sequential_memory.py tiny --out runs/seqmem-tiny --ns 10 100 --kedit-src runs/kedit-before --label before
    python bench/sequential_memory.py real --out runs/seqmem-smollm2 --ns 10 100 --artifact runs/mend-mixed \\
        --data counterfact-easyedit:../shared/data/counterfact/easyedit_counterfact-edit.json

Every measurement is appended to ``--out``/results.jsonl (a measurement already there, same label,
setup and N, is not repeated) and the whole table is printed as markdown. Run it under the CPU lock
(``flock /tmp/kedit-cpu.lock``); children use one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024
# -P: the working directory (the repository, where the checkout's kedit lives) is not put in front of
# PYTHONPATH, so --kedit-src decides which kedit the children import
PYTHON = [sys.executable, "-P"]

RELATIONS = [  # (prompt, rephrase, targets): words the tiny tokenizer was trained on
    ("The mother tongue of {} is", "{} speaks the language", ["French", "English", "German", "Spanish"]),
    ("{} plays the sport of", "The sport {} plays is", ["football", "basketball", "tennis"]),
    ("{} was a physicist who worked in", "{} worked as a physicist in", ["Paris", "Berlin", "Rome", "Tokyo"]),
    ("{} is located in the city of", "{} can be found in", ["Paris", "Rome", "Vienna", "Chicago"]),
]
FIRST = ["Albert", "Marie", "Lionel", "Michael", "Toko", "Danielle", "William", "Steve", "Apple", "Louvre"]
LAST = ["Einstein", "Curie", "Messi", "Jordan", "Yasuda", "Darrieux", "Shakespeare", "Jobs", "Beatles", "Nile",
        "Amazon", "Danube", "Everest", "Colosseum", "Tower", "Capital"]


def synthetic_records(count: int, offset: int) -> list[dict]:
    """EasyEdit-flat CounterFact records with distinct subjects (``offset`` keeps train and edit sets apart)."""
    records = []
    for index in range(offset, offset + count):
        relation = RELATIONS[index % len(RELATIONS)]
        subject = f"{FIRST[index % len(FIRST)]} {LAST[(index // len(FIRST)) % len(LAST)]} {index // (len(FIRST) * len(LAST))}"
        targets = relation[2]
        records.append({
            "case_id": index,
            "prompt": relation[0].format(subject),
            "subject": subject,
            "target_new": targets[index % len(targets)],
            "ground_truth": targets[(index + 1) % len(targets)],
            "rephrase_prompt": relation[1].format(subject),
            "locality_prompt": "The Danube flows through",
            "locality_ground_truth": "Vienna",
        })
    return records


def run(command: list[str], env: dict[str, str], log: Path) -> tuple[int, float, int]:
    """(exit status, seconds, peak RSS in bytes) of one child process."""
    started = time.perf_counter()
    with log.open("ab") as sink:
        child = subprocess.Popen(command, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return child.returncode, time.perf_counter() - started, usage.ru_maxrss * 1024  # Linux: kB


def child_env(kedit_src: Path | None) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if kedit_src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(kedit_src.resolve()), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def which_kedit(env: dict[str, str]) -> str:
    """The folder the children import kedit from, relative to the repository when inside it."""
    found = subprocess.run([*PYTHON, "-c", "import kedit, pathlib; print(pathlib.Path(kedit.__file__).parent)"],
                           cwd=REPO, env=env, capture_output=True, text=True, check=True).stdout.strip()
    path = Path(found).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) if folder.exists() else 0


def tiny_setup(out: Path, n_max: int, env: dict[str, str], log: Path) -> tuple[str, str, str]:
    """(model folder, data spec, artifact folder) of the tiny setup, built once under ``out``/setup."""
    sys.path.insert(0, str(REPO))
    import transformers as tf

    from tests.tiny_models import train_tokenizer

    setup = out / "setup"
    model_dir, train_dir = setup / "model", setup / "mend"
    data_file, train_file = setup / "cases.json", setup / "train.json"
    if not (model_dir / "config.json").is_file():
        tokenizer = train_tokenizer()
        config = tf.LlamaConfig(vocab_size=len(tokenizer), hidden_size=576, intermediate_size=1536,
                                num_hidden_layers=4, num_attention_heads=9, num_key_value_heads=3,
                                max_position_embeddings=256, bos_token_id=0, eos_token_id=0, pad_token_id=0)
        import torch

        torch.manual_seed(0)
        tf.LlamaForCausalLM(config).to(torch.float32).save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
    if not data_file.is_file() or len(json.loads(data_file.read_text())) < n_max:
        data_file.write_text(json.dumps(synthetic_records(n_max, offset=0)))
    if not train_file.is_file():
        train_file.write_text(json.dumps(synthetic_records(40, offset=100_000)))
    if not (train_dir / "artifact" / "artifact.json").is_file():
        status, _, _ = run([*PYTHON, "-m", "kedit", "train", "mend", "--model", str(model_dir),
                            "--data", f"counterfact-easyedit:{train_file}", "--out", str(train_dir), "--steps", "6",
                            "--val-every", "3", "--held-out", "8", "--set", "rank=8", "--set", "edits_per_step=4",
                            "--set", "val_cases=8", "--no-progress"], env, log)
        if status != 0:
            raise SystemExit(f"training the tiny MEND editor failed (exit {status}); see {log}")
    return str(model_dir), f"counterfact-easyedit:{data_file}", str(train_dir)


def measure(args: argparse.Namespace, model: str, data: str, artifact: str, n: int, env: dict[str, str],
            log: Path, source: str) -> dict:
    run_dir = args.out / "runs" / f"{args.label}-n{n}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    command = [*PYTHON, "-m", "kedit", "bench", "--model", model, "--method", "mend", "--set",
               f"artifact={artifact}", "--data", data, "--n", str(n), "--mode", "sequential:log", "--out",
               str(run_dir), "--no-progress", *args.extra]
    status, seconds, peak = run(command, env, log)
    if status != 0:
        raise SystemExit(f"kedit bench failed (exit {status}) for N={n}; see {log}")
    edits = run_dir / "edits"
    record = {
        "label": args.label, "setup": args.setup, "kedit_package": source, "n_edits": n,
        "peak_rss_mib": round(peak / MIB, 1), "run_dir_mib": round(folder_bytes(run_dir) / MIB, 2),
        "edits_mib": round(folder_bytes(edits) / MIB, 2),
        "per_edit_kib": round(folder_bytes(edits) / 1024 / n, 1), "seconds": round(seconds, 1),
        "command": " ".join(["kedit", *command[len(PYTHON) + 2:]]).replace(str(REPO) + os.sep, ""),
    }
    if not args.keep_edits:
        shutil.rmtree(edits, ignore_errors=True)
    return record


def table(records: list[dict]) -> str:
    lines = ["| setup | kedit | N edits | peak RSS (MiB) | run folder (MiB) | stored edits (MiB) | per edit (KiB) | time (s) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(records, key=lambda r: (r["setup"], r["label"], r["n_edits"])):
        lines.append(f"| {r['setup']} | {r['label']} | {r['n_edits']} | {r['peak_rss_mib']:.0f} | {r['run_dir_mib']:.1f} "
                     f"| {r['edits_mib']:.1f} | {r['per_edit_kib']:.0f} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("setup", choices=["tiny", "real"])
    parser.add_argument("--out", type=Path, required=True, help="folder for results.jsonl, the runs and the tiny setup")
    parser.add_argument("--ns", type=int, nargs="+", default=[10, 100, 1000], help="sequence lengths to measure")
    parser.add_argument("--label", default="after", help="name of the kedit version measured (table column)")
    parser.add_argument("--kedit-src", type=Path, help="folder holding another kedit package to run the children with")
    parser.add_argument("--model", default="smollm2-135m", help="real: the model")
    parser.add_argument("--artifact", help="real: the trained MEND editor (--set artifact=)")
    parser.add_argument("--data", help="real: NAME:PATH of the cases")
    parser.add_argument("--keep-edits", action="store_true", help="keep each run's edits/ folder")
    parser.add_argument("extra", nargs="*", help="further `kedit bench` options, after --")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "children.log"
    env = child_env(args.kedit_src)
    source = which_kedit(env)
    if args.setup == "tiny":
        model, data, artifact = tiny_setup(args.out, max(args.ns), child_env(None), log)
    else:
        if not args.artifact or not args.data:
            raise SystemExit("real: give --artifact (a trained MEND editor) and --data NAME:PATH")
        model, data, artifact = args.model, args.data, args.artifact
        args.extra = ["--drop-training-overlap", *args.extra]
    results = args.out / "results.jsonl"
    done = [json.loads(line) for line in results.read_text().splitlines()] if results.is_file() else []
    for n in args.ns:
        if any(r["label"] == args.label and r["setup"] == args.setup and r["n_edits"] == n for r in done):
            continue
        print(f"[{args.label}] N={n} …", file=sys.stderr, flush=True)
        record = measure(args, model, data, artifact, n, env, log, source)
        done.append(record)
        with results.open("a", encoding="utf-8") as sink:
            sink.write(json.dumps(record) + "\n")
        print(json.dumps(record), file=sys.stderr, flush=True)
    print(table(done))


if __name__ == "__main__":
    main()
