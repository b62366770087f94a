"""The cases ``kedit bench``, ``kedit train`` and ``kedit sweep`` read: ``--data NAME:PATH`` (a registered
dataset format, a file of ``Case`` records, or the built-in demo set) cut into the cases to edit and the
held-out ones, with what run.json records about the file."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kedit.errors import KeditError
from kedit.requests import Case

# Names read here rather than by kedit.data.registry: a file of Case.to_dict() records, the built-in demo set.
CASES_FORMAT, DEMO_FORMAT = "cases", "demo"


@dataclass(frozen=True)
class BenchData:
    """The cases to edit, the held-out cases, and what run.json records about the data."""

    cases: tuple[Case, ...]
    held_out: tuple[Case, ...]
    spec: Mapping[str, Any]


def _read_cases(name: str, path: str | None, limit: int) -> tuple[list[Case], dict[str, Any]]:
    from kedit.paths import sha256_file
    from kedit.runs import portable_path

    if name == DEMO_FORMAT:
        from kedit.data.demo import demo_cases

        return demo_cases(limit), {"name": DEMO_FORMAT, "path": None, "sha256": None}
    if not path:
        raise KeditError(f"--data {name!r} needs a file: write it as NAME:PATH, e.g. counterfact:/data/counterfact.json")
    file = Path(path).expanduser()
    if not file.is_file():
        raise KeditError(f"--data: {file} does not exist or is not a file")
    spec = {"name": name, "path": portable_path(file), "sha256": sha256_file(file)}  # kedit.runs.portable
    if name == CASES_FORMAT:
        from kedit.requests import load_cases

        return load_cases(file)[:limit], spec
    from kedit.data.registry import load_dataset

    loaded = load_dataset(name, file, limit=limit)
    if not loaded.cases:
        from kedit.data.registry import why_no_cases

        reason, better = why_no_cases(loaded)
        raise KeditError(reason + (f"; use --data {better}:{path}" if better else ""))
    if loaded.problems:
        spec["skipped_records"] = len(loaded.problems)
    return list(loaded.cases), spec | {"name": loaded.name}


def load_bench_data(data: str, n: int, held_out: int) -> BenchData:
    """``NAME:PATH`` (or ``demo``) → the first ``n`` cases to edit and the next ``held_out`` ones."""
    name, _, path = data.partition(":")
    name = name.strip().lower()
    cases, spec = _read_cases(name, path or None, n + held_out)
    if held_out and len(cases) < n + held_out:
        raise KeditError(f"--data {data} gives {len(cases)} cases; --n {n} plus --held-out {held_out} "
                         f"needs {n + held_out}. Lower --n or --held-out.")
    if not cases:
        raise KeditError(f"--data {data} holds no cases")
    edited = cases[: min(n, len(cases) - held_out)]
    return BenchData(tuple(edited), tuple(cases[len(edited) : len(edited) + held_out]), spec)
