"""The datasets kedit can read, by name: ``load_dataset(name, path)`` and ``detect_format(path)``.

:data:`DATASETS` is an immutable mapping built once by :func:`_specs`; nothing registers itself at
import time.

Format detection reads the keys of the first few records (or of the file's top-level object) and
picks the format one of whose key sets (``signatures``) they all have, the most specific (largest
key set) winning; a file that fits none raises :class:`~kedit.errors.DataError` listing every
known key set.

ConflictEdit and RoundEdit records (:mod:`kedit.data.pitfalls`) are pairs of edits with their own
protocol, not cases: ``load_dataset`` returns them parsed in ``LoadedDataset.records``, with no
``cases``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from kedit.data.counterfact import load_counterfact_easyedit, load_counterfact_rome
from kedit.data.knowedit import load_knowedit, load_knowedit_sanitation, load_knowedit_wikibio
from kedit.data.loaders import LoadedDataset, read_json
from kedit.data.mquake import load_mquake, load_mquake_triples
from kedit.data.pitfalls import CONFLICT_EDIT, ROUND_EDIT, load_conflict_edit, load_round_edit
from kedit.data.wise import load_wise
from kedit.data.zsre import load_zsre
from kedit.errors import DataError

Loader = Callable[..., LoadedDataset]  # (path, *, limit: int | None, strict: bool) -> LoadedDataset
SAMPLED_RECORDS = 5


@dataclass(frozen=True)
class DatasetSpec:
    """One readable format: its name, a line for ``kedit data list``, its loader and its key sets."""

    name: str
    summary: str
    load: Loader
    signatures: tuple[frozenset[str], ...]

    def fit(self, keys: frozenset[str]) -> int:
        """The size of the largest key set of this format that ``keys`` contains (0: none)."""
        return max((len(signature) for signature in self.signatures if signature <= keys), default=0)


def _specs() -> tuple[DatasetSpec, ...]:
    def keys(*sets: set[str]) -> tuple[frozenset[str], ...]:
        return tuple(frozenset(names) for names in sets)

    return (
        DatasetSpec("counterfact", "CounterFact, ROME/MEMIT layout (counterfact.json)", load_counterfact_rome,
                    keys({"requested_rewrite", "paraphrase_prompts", "neighborhood_prompts"})),
        DatasetSpec("counterfact-easyedit", "CounterFact, EasyEdit/MEND flat layout (counterfact-edit.json)",
                    load_counterfact_easyedit,
                    keys({"prompt", "subject", "target_new", "ground_truth", "rephrase_prompt",
                          "locality_prompt", "locality_ground_truth"})),
        DatasetSpec("zsre", "ZsRE, MEND/EasyEdit layout, optional GPT-4 portability (zsre_mend_*.json)",
                    load_zsre, keys({"src", "subject", "alt", "loc", "loc_ans"})),
        DatasetSpec("knowedit", "KnowEdit ZsRE / Wiki-counterfact / Wiki-recent", load_knowedit,
                    keys({"prompt", "subject", "target_new", "locality", "portability"})),
        DatasetSpec("knowedit-wikibio", "KnowEdit WikiBio (continue a biography)", load_knowedit_wikibio,
                    keys({"text", "labels", "concept"})),
        DatasetSpec("knowedit-sanitation", "KnowEdit Sanitation, TriviaQA 'I don't know.' (trivia_qa_*.json)",
                    load_knowedit_sanitation, keys({"success", "locality"}, {"K_F", "K_R"})),
        DatasetSpec("mquake", "MQuAKE-CF / -T / -hard, multi-hop (one case per rewrite)", load_mquake,
                    keys({"requested_rewrite", "questions", "new_answer"})),
        DatasetSpec("mquake-t", "MQuAKE-T flat edit triples (Benchmarking-KE new_mquake-t.json)",
                    load_mquake_triples, keys({"prompt", "subject", "target_new", "target_true", "question"})),
        DatasetSpec("wise", "WISE hallucination / temporal", load_wise,
                    keys({"prompt", "subject", "target_new", "locality_prompt", "locality_ground_truth"})),
        DatasetSpec(CONFLICT_EDIT, "Pitfalls ConflictEdit (reverse / composite / coverage)", load_conflict_edit,
                    keys({"edits", "triples"})),
        DatasetSpec(ROUND_EDIT, "Pitfalls RoundEdit (easy / hard)", load_round_edit, keys({"edit", "true_objects"})),
    )


DATASETS: Mapping[str, DatasetSpec] = MappingProxyType({spec.name: spec for spec in _specs()})


def dataset_spec(name: str) -> DatasetSpec:
    """The format called ``name`` (case and ``_``/``-`` insensitive), or a DataError listing the names."""
    key = name.strip().lower().replace("_", "-")
    if key not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)} (or 'auto' to detect)")
    return DATASETS[key]


def _sample_keys(document: Any) -> list[frozenset[str]]:
    if isinstance(document, Mapping):
        return [frozenset(document)]
    if isinstance(document, Sequence) and not isinstance(document, str):
        return [frozenset(record) for record in document[:SAMPLED_RECORDS] if isinstance(record, Mapping)]
    return []


def detect_format(path: str | Path) -> str:
    """The name of the format whose keys the file's first records have (see the module docstring)."""
    samples = _sample_keys(read_json(path))
    if not samples:
        raise DataError(f"{path}: no JSON object records to recognise (expected a list of objects)")
    common = frozenset.intersection(*samples)
    best = max(DATASETS.values(), key=lambda spec: spec.fit(common))
    if best.fit(common) == 0:
        known = "; ".join(f"{spec.name}: " + " or ".join(str(sorted(keys)) for keys in spec.signatures)
                          for spec in DATASETS.values())
        raise DataError(f"{path}: records with keys {sorted(common)} match no known dataset format. "
                        f"Known formats and the keys each needs: {known}")
    return best.name


def load_dataset(
    name: str, path: str | Path, *, limit: int | None = None, strict: bool = False
) -> LoadedDataset:
    """Read ``path`` as dataset ``name`` (``"auto"`` detects it) into cases and problems.

    ``limit`` reads only the first records; malformed records are skipped and listed in
    ``problems`` unless ``strict``, which raises :class:`~kedit.errors.DataError` at the first.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"dataset file {path} does not exist (or is not a file)")
    spec = dataset_spec(detect_format(path) if name.strip().lower() == "auto" else name)
    return spec.load(path, limit=limit, strict=strict)


SHOWN_PROBLEMS = 3


def why_no_cases(loaded: LoadedDataset) -> tuple[str, str | None]:
    """Why a dataset read as ``loaded.name`` gave no cases, and the format to read it as instead
    (None when the format was right): the file looks like another format, or its records were
    skipped (how many, the first reasons)."""
    try:
        detected: str | None = detect_format(loaded.path)
    except DataError:
        detected = None
    if detected is not None and detected != loaded.name:
        return (f"{loaded.path} read as {loaded.name!r} holds no cases; its records look like {detected!r} "
                f"({DATASETS[detected].summary})"), detected
    if loaded.problems:
        shown = "; ".join(str(problem) for problem in loaded.problems[:SHOWN_PROBLEMS])
        more = f" (and {len(loaded.problems) - SHOWN_PROBLEMS} more)" if len(loaded.problems) > SHOWN_PROBLEMS else ""
        return (f"{loaded.path} read as {loaded.name!r} holds no cases: {len(loaded.problems)} of "
                f"{loaded.records_read} records were skipped — {shown}{more}; `kedit data check {loaded.path}` "
                f"lists every problem"), None
    return f"{loaded.path} read as {loaded.name!r} holds no records", None
