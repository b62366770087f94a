"""The datasets kedit can read, by name: ``load_dataset(name, path)`` and ``detect_format(path)``.

:data:`DATASETS` is an immutable mapping built once by :func:`_specs`; nothing registers itself at
import time.

Format detection reads the keys of the first few records (or of the file's top-level object) and
picks the format one of whose key sets (``signatures``) they all have, the most specific (largest
key set) winning; a format whose ``excludes`` holds a key of any sampled record does not fit (a
derived-10k ZsRE file has ``case_id`` and no ``answers``, a MEND ZsRE file ``answers``: the two read
``alt`` as opposite answers). A file that fits none raises :class:`~kedit.errors.DataError` listing
every known key set.

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
from kedit.data.longtail import load_longtail
from kedit.data.mquake import load_mquake, load_mquake_triples
from kedit.data.pitfalls import CONFLICT_EDIT, ROUND_EDIT, load_conflict_edit, load_round_edit
from kedit.data.portability import (
    load_counterfact_distracting,
    load_counterfact_one_hop,
    load_counterfact_subject_replace,
    load_piqa,
    load_zsre_inverse_relation,
    load_zsre_subject_replace,
)
from kedit.data.wise import load_wise
from kedit.data.zsre import load_zsre, load_zsre_derived
from kedit.errors import DataError

Loader = Callable[..., LoadedDataset]  # (path, *, limit: int | None, strict: bool) -> LoadedDataset
SAMPLED_RECORDS = 5


@dataclass(frozen=True)
class DatasetSpec:
    """One readable format: its name, a line for ``kedit data list``, its loader, its key sets and the
    keys its records never have."""

    name: str
    summary: str
    load: Loader
    signatures: tuple[frozenset[str], ...]
    excludes: frozenset[str] = frozenset()

    def fit(self, keys: frozenset[str], seen: frozenset[str] | None = None) -> int:
        """The size of the largest key set of this format that ``keys`` contains (0: none, or a key of
        ``excludes`` among ``seen``, the keys of any sampled record, default ``keys``)."""
        if self.excludes & (keys if seen is None else seen):
            return 0
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
        DatasetSpec("zsre-derived", "ZsRE derived-10k training set: alt is the TRUE answer, targets in the "
                    "_en_ .txt beside it (zsre_mend_train_10000.json)", load_zsre_derived,
                    keys({"case_id", "src", "subject", "alt", "loc", "loc_ans"}), frozenset({"answers"})),
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
        DatasetSpec("counterfact-distracting", "CounterFact with distracting neighbours and an unrelated "
                    "attribute, Yao et al. 2023 (counterfact_distracting_neighbor.json)", load_counterfact_distracting,
                    keys({"requested_rewrite", "paraphrase_prompts", "neighborhood_prompts",
                          "distracting_neighborhood_prompts", "unrelated_relation"})),
        DatasetSpec("counterfact-one-hop", "CounterFact with GPT-4 one-hop portability questions, Yao et al. 2023 "
                    "(counterfact_portability_gpt4.json)", load_counterfact_one_hop,
                    keys({"requested_rewrite", "paraphrase_prompts", "neighborhood_prompts", "portability"})),
        DatasetSpec("counterfact-subject-replace", "CounterFact asked about a subject alias, Yao et al. 2023 "
                    "(counterfact_subject_replace.json)", load_counterfact_subject_replace,
                    keys({"requested_rewrite", "paraphrase_prompts", "neighborhood_prompts", "alternative_subject"})),
        DatasetSpec("zsre-subject-replace", "ZsRE asked about a subject alias, Yao et al. 2023 "
                    "(zsre_subject_replace.json)", load_zsre_subject_replace,
                    keys({"src", "subject", "alt", "answers", "alternative_subject", "alter_subject_question"})),
        DatasetSpec("zsre-inverse-relation", "ZsRE edits asked backwards, Yao et al. 2023 (zsre_inverse_relation.json)",
                    load_zsre_inverse_relation, keys({"src", "subject", "alt", "answers", "inverse question"})),
        DatasetSpec("piqa", "PIQA with its labels file, commonsense locality probes (piqa_valid.jsonl)", load_piqa,
                    keys({"goal", "sol1", "sol2"})),
        DatasetSpec(CONFLICT_EDIT, "Pitfalls ConflictEdit (reverse / composite / coverage)", load_conflict_edit,
                    keys({"edits", "triples"})),
        DatasetSpec(ROUND_EDIT, "Pitfalls RoundEdit (easy / hard)", load_round_edit, keys({"edit", "true_objects"})),
        DatasetSpec("longtail", "a long-tail benchmark's cases.jsonl (kedit longtail build)", load_longtail,
                    keys({"longtail", "prompt", "subject", "target_new", "rephrases", "locality", "portability"})),
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
    seen = frozenset.union(*samples)
    best = max(DATASETS.values(), key=lambda spec: spec.fit(common, seen))
    if best.fit(common, seen) == 0:
        known = "; ".join(f"{spec.name}: " + " or ".join(str(sorted(keys)) for keys in spec.signatures)
                          + (f" without {sorted(spec.excludes)}" if spec.excludes else "")
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
