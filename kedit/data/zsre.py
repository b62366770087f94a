"""ZsRE in the MEND/EasyEdit layout (``zsre_mend_{train,eval}.json``, WISE's ``zsre_mend_edit.json``),
and the derived 10k training set (``zsre-derived``).

``zsre``. Record -> case: ``src`` is the question (the subject written out), ``subject``, ``alt`` the
new answer, ``answers[0]`` the true one; ``rephrase`` is the rephrased question; ``loc`` (a Natural
Questions question, kept verbatim with its ``"nq question: "`` prefix as EasyEdit scores it) and
``loc_ans`` make the locality probe. The GPT-4 portability variant adds
``portability = {"New Question", "New Answer"}`` (one object or a list of them), read as portability
probes. ``pred`` and ``cond`` (the MEND model's prediction and its conditioning string) are not read.

``zsre-derived``. ``zsre_mend_train_10000.json`` of a multilingual-zsRE project: 10,000 MEND training
records (a superset of the 1k sample) reshaped to ``case_id, subject, src, rephrase, alt, loc,
loc_ans``, with its edit targets in ``zsre_mend_train_en_10000.txt`` beside it. Three things differ
from ``zsre`` and were checked on the shared files:

* ``alt`` holds the TRUE answer, not the new one (for the 1,000 records shared with the 1k sample it
  is that sample's ``answers[0]``), and there is no ``answers`` field;
* the edit target of record ``i`` is the second column of line ``i + 1`` of the ``.txt``
  (``question TAB target``, same order; the 1k sample's ``alt`` is that target for every shared
  record). The name is the JSON's with ``_en`` before the count (``NAME_N.json`` ->
  ``NAME_en_N.txt``); ``targets=`` names another file. The ``.txt`` must have one line per record
  and each line's question must equal its record's ``src``, or the file is refused with one line
  naming the line and the fix. A line with nothing after the TAB (35 gender questions in the shared
  file) skips its record (field ``target_new``);
* every ``loc`` has one ``"?"`` appended (every ``loc`` of the file ends in ``"?"``, none in ``"??"``,
  and the original NQ questions of the 1k sample end in none): exactly one trailing ``"?"`` is
  removed, and a ``loc`` without it is a problem of that record (it is not this layout).

Record -> case: ``src`` prompt, ``subject``, ``target_new`` = the ``.txt`` target, ``target_true`` =
``alt``, ``rephrase`` -> rephrases, ``loc`` (one ``"?"`` removed) with ``loc_ans`` -> one locality
probe, ``case_id`` = ``case_id``. Records whose target equals ``alt`` (246 in the shared file) are
kept: a request may ask for the answer the model should already give.

Why the two loaders refuse each other's files: read as ``zsre``, a derived record would silently give
``target_new`` = the true answer and no ``target_true``. MEND ZsRE files always carry ``answers`` and
never ``case_id``; a derived file has ``case_id`` and no ``answers``. So :func:`load_zsre` refuses a
file any of whose records has ``case_id`` but no ``answers`` (one :class:`~kedit.errors.DataError`
naming the record and ``zsre-derived``), :func:`load_zsre_derived` refuses one with ``answers``, and
format detection picks ``zsre-derived`` for such records (its key set is larger, and it excludes
``answers``: :mod:`kedit.data.registry`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kedit.data.loaders import (
    FieldProblem,
    LoadedDataset,
    answer_text,
    blame,
    build_dataset,
    field_value,
    optional_text,
    read_records,
    text_field,
    text_list,
)
from kedit.errors import DataError
from kedit.requests import Case, EditRequest, LocalityProbe, PortabilityProbe


def portability_probes(record: Mapping[str, Any], kind: str | None = None) -> tuple[PortabilityProbe, ...]:
    """``record["portability"]`` (``{"New Question", "New Answer"}`` or a list of them) as probes of ``kind``."""
    value = record.get("portability")
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    probes = []
    for position, item in enumerate(items):
        where = "portability" if len(items) == 1 else f"portability[{position}]"
        if not isinstance(item, Mapping):
            raise FieldProblem(where, f"must be an object with 'New Question' and 'New Answer', got {item!r:.80}")
        question = text_field(item, "New Question", path=f"{where}.New Question")
        answer = answer_text(field_value(item, "New Answer", path=f"{where}.New Answer"), f"{where}.New Answer")
        probes.append(PortabilityProbe(question, answer, kind=kind))
    return tuple(probes)


def zsre_case(record: Mapping[str, Any], index: int) -> tuple[Case, ...]:
    """One case from a MEND-layout ZsRE record (see the module docstring for the mapping)."""
    prompt = text_field(record, "src")
    subject = text_field(record, "subject")
    target_new = answer_text(field_value(record, "alt"), "alt")
    answers = record.get("answers")
    target_true = answer_text(answers, "answers") if answers else None
    with blame("src/subject"):
        request = EditRequest(prompt=prompt, subject=subject, target_new=target_new, target_true=target_true)
    locality = ()
    loc = optional_text(record, "loc")
    if loc is not None:
        locality = (LocalityProbe(loc, answer_text(field_value(record, "loc_ans"), "loc_ans")),)
    return (Case(request=request, rephrases=text_list(record, "rephrase"), locality=locality,
                 portability=portability_probes(record), case_id=str(index)),)


def _first_record(records: Sequence[Any], test: Callable[[Mapping[str, Any]], bool]) -> int | None:
    return next((index for index, record in enumerate(records) if isinstance(record, Mapping) and test(record)),
                None)


def load_zsre(path: str | Path, *, limit: int | None = None, strict: bool = False) -> LoadedDataset:
    """A MEND/EasyEdit ZsRE file (with or without GPT-4 portability questions) as cases.

    A file with derived-10k records (``case_id``, no ``answers``) is refused: read this way its
    ``alt``, the true answer, would become the new target (see the module docstring).
    """
    records = read_records(path)
    derived = _first_record(records, lambda record: "case_id" in record and "answers" not in record)
    if derived is not None:
        raise DataError(f"{path}: record {derived} has case_id and no answers: the derived-10k ZsRE layout, whose "
                        f"alt is the TRUE answer and whose targets are in the _en_ .txt beside it; read it as "
                        f"'zsre-derived', not 'zsre'")
    return build_dataset("zsre", path, records, zsre_case, limit=limit, strict=strict)


DERIVED_NAME = re.compile(r"(?P<stem>.+)_(?P<count>\d+)\.json")
DERIVED_LOC_SUFFIX = "?"


def derived_targets_path(path: str | Path) -> Path:
    """The targets file beside a derived-10k JSON: ``NAME_N.json`` -> ``NAME_en_N.txt``."""
    path = Path(path)
    match = DERIVED_NAME.fullmatch(path.name)
    if match is None:
        raise DataError(f"{path}: cannot tell its targets file from the name (expected NAME_N.json, whose targets "
                        f"are NAME_en_N.txt beside it, e.g. zsre_mend_train_10000.json -> "
                        f"zsre_mend_train_en_10000.txt); pass targets=PATH to load_zsre_derived")
    return path.with_name(f"{match['stem']}_en_{match['count']}.txt")


def read_derived_targets(targets: str | Path, records: Sequence[Any], source: str | Path) -> list[str]:
    """The second column of each line of ``targets`` (``question TAB target``), checked against
    ``records``: one line per record, each question equal to its record's ``src``."""
    targets = Path(targets)
    fix = (f"put the targets file (question TAB target, one line per record of {Path(source).name}, same "
           f"order) at {targets}, or pass targets=PATH to load_zsre_derived")
    if not targets.is_file():
        raise DataError(f"{targets}: the edit targets of {source} are missing; {fix}")
    try:
        text = targets.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"{targets}: not UTF-8 text ({error}); {fix}") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    if len(lines) < len(records):
        raise DataError(f"{targets}: {len(lines)} lines for the {len(records)} records of {source}: the file is "
                        f"short (truncated?); {fix}")
    if len(lines) > len(records):
        raise DataError(f"{targets}: {len(lines)} lines for the {len(records)} records of {source}: not the "
                        f"targets of this file; {fix}")
    found = []
    for number, (line, record) in enumerate(zip(lines, records, strict=True), start=1):
        line = line.removesuffix("\r")
        if line.count("\t") != 1:
            raise DataError(f"{targets}: line {number} has {line.count(chr(9))} TABs, expected one "
                            f"(question TAB target): {line!r:.100}")
        question, target = line.split("\t")
        src = record.get("src") if isinstance(record, Mapping) else None
        if isinstance(src, str) and question != src:
            raise DataError(f"{targets}: line {number}: question {question!r:.100} is not record {number - 1}'s "
                            f"src {src!r:.100}; the targets are not in {Path(source).name}'s order (or belong to "
                            f"another file); {fix}")
        found.append(target)
    return found


def _derived_builder(targets: Sequence[str], targets_name: str) -> Callable[[Mapping[str, Any], int], tuple[Case, ...]]:
    def build(record: Mapping[str, Any], index: int) -> tuple[Case, ...]:
        prompt = text_field(record, "src")
        subject = text_field(record, "subject")
        target_true = answer_text(field_value(record, "alt"), "alt")
        target_new = targets[index]
        if not target_new.strip():
            raise FieldProblem("target_new", f"line {index + 1} of {targets_name} has an empty target (nothing "
                                             f"after the TAB)")
        with blame("src/subject"):
            request = EditRequest(prompt=prompt, subject=subject, target_new=target_new, target_true=target_true)
        loc = text_field(record, "loc")
        if not loc.endswith(DERIVED_LOC_SUFFIX):
            raise FieldProblem("loc", f"does not end with the '?' the derived-10k layout appends to every loc: "
                                      f"{loc!r:.80}")
        with blame("loc"):
            locality = (LocalityProbe(loc.removesuffix(DERIVED_LOC_SUFFIX),
                                      answer_text(field_value(record, "loc_ans"), "loc_ans")),)
        case_id = str(record["case_id"]) if record.get("case_id") is not None else str(index)
        return (Case(request=request, rephrases=text_list(record, "rephrase"), locality=locality,
                     case_id=case_id),)

    return build


def load_zsre_derived(
    path: str | Path, *, limit: int | None = None, strict: bool = False, targets: str | Path | None = None
) -> LoadedDataset:
    """The derived-10k ZsRE training file and its ``.txt`` of edit targets as cases (module docstring).

    ``targets`` is the ``.txt`` (default: :func:`derived_targets_path` of ``path``). A file with
    ``answers`` (plain MEND ZsRE, whose ``alt`` is the new answer) is refused.
    """
    records = read_records(path)
    plain = _first_record(records, lambda record: "answers" in record)
    if plain is not None:
        raise DataError(f"{path}: record {plain} has answers: plain MEND ZsRE, whose alt is the NEW answer; read it "
                        f"as 'zsre', not 'zsre-derived'")
    targets_path = Path(targets) if targets is not None else derived_targets_path(path)
    found = read_derived_targets(targets_path, records, path)
    return build_dataset("zsre-derived", path, records, _derived_builder(found, targets_path.name),
                         limit=limit, strict=strict, id_key="case_id")
