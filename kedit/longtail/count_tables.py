"""Precomputed co-occurrence counts, imported instead of counted (e.g. MEDLINE-wide tables).

A count table is a TSV with a header; three of its columns give the two concept ids and the count.
``FILE#subject_col,object_col,count_col`` names them; without ``#`` the columns are found by name:
``subject_id, object_id, count`` (or ``documents``), or the layout of dhimmel/medline's
``disease-disease-cooccurrence.tsv`` (``doid_code_0, doid_code_1, cooccurrence``). A
co-occurrence count is of an unordered pair, so a triple (s, r, o) takes the row of (s, o) or
(o, s). The table's ids are mapped to the triple set's entities through the same crosswalk as
mention ids (:class:`kedit.longtail.linking.Crosswalk`): a MeSH-keyed triple set reads a
Disease-Ontology-keyed table through a DOID -> MeSH pair file given with ``--xrefs``.

Imported counts are document counts only: a table of pairs says nothing of sentences, nor of a
concept's own frequency. A triple whose pair the table lacks has no count, so it is left out (it is
not counted as 0: the table may simply not cover it).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kedit.errors import DataError
from kedit.longtail.linking import Crosswalk

KNOWN_LAYOUTS: tuple[tuple[str, str, str], ...] = (
    ("subject_id", "object_id", "count"),
    ("subject_id", "object_id", "documents"),
    ("doid_code_0", "doid_code_1", "cooccurrence"),
)


@dataclass(frozen=True)
class TableSpec:
    """A count table and its three columns."""

    path: Path
    columns: tuple[str, str, str] | None = None

    @classmethod
    def parse(cls, text: str) -> TableSpec:
        """``FILE`` or ``FILE#subject_col,object_col,count_col``."""
        path, hashed, columns = text.partition("#")
        if not hashed:
            return cls(Path(path))
        names = tuple(name.strip() for name in columns.split(","))
        if len(names) != 3 or not all(names):
            raise DataError(f"--counts {text}: after '#' name three columns: subject,object,count")
        return cls(Path(path), names)  # type: ignore[arg-type]


def _columns(spec: TableSpec, header: Sequence[str]) -> tuple[str, str, str]:
    if spec.columns is not None:
        missing = [name for name in spec.columns if name not in header]
        if missing:
            raise DataError(f"{spec.path}:1: no column(s) {missing} in the header {list(header)}")
        return spec.columns
    for layout in KNOWN_LAYOUTS:
        if set(layout) <= set(header):
            return layout
    raise DataError(f"{spec.path}:1: cannot tell which columns hold the ids and the count (header {list(header)}); "
                    "write --counts FILE#subject_column,object_column,count_column")


def read_pair_counts(spec: TableSpec, crosswalk: Crosswalk) -> dict[tuple[str, str], int]:
    """(entity id, entity id) -> count, both orders, for every row whose ids reach entities.

    A pair reached by several rows (two table ids mapping to one entity) keeps the largest count.
    """
    if not spec.path.is_file():
        raise DataError(f"--counts {spec.path}: no such file")
    counts: dict[tuple[str, str], int] = {}
    with open(spec.path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        first, second, count_column = _columns(spec, reader.fieldnames or ())
        for number, row in enumerate(reader, start=2):
            raw = row.get(count_column) or ""
            try:
                count = int(float(raw))
            except ValueError:
                raise DataError(f"{spec.path}:{number}: field {count_column} is {raw!r}, not a count") from None
            if count < 0:
                raise DataError(f"{spec.path}:{number}: field {count_column} is negative ({count})")
            for a in crosswalk.lookup(row.get(first) or ""):
                for b in crosswalk.lookup(row.get(second) or ""):
                    for key in ((a, b), (b, a)):
                        counts[key] = max(count, counts.get(key, 0))
    return counts
