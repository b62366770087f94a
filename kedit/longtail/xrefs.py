"""Id mapping files (``--xrefs``): pairs of ids naming the same concept in two vocabularies.

A TSV with a header; ``FILE#column_a,column_b`` names the two id columns, plain ``FILE`` takes the
first two. dhimmel/medline's ``DO-slim-to-mesh.tsv`` is ``FILE#doid_code,mesh_id``. Ids are
normalised (``D019337`` -> ``MESH:D019337``); rows with an empty id are skipped.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from kedit.errors import DataError


@dataclass(frozen=True)
class XrefSpec:
    """A mapping file and its two id columns (None: the first two)."""

    path: Path
    columns: tuple[str, str] | None = None

    @classmethod
    def parse(cls, text: str) -> XrefSpec:
        path, hashed, columns = text.partition("#")
        if not hashed:
            return cls(Path(path))
        names = tuple(name.strip() for name in columns.split(","))
        if len(names) != 2 or not all(names):
            raise DataError(f"--xrefs {text}: after '#' name two columns, e.g. FILE#doid_code,mesh_id")
        return cls(Path(path), names)  # type: ignore[arg-type]

    def label(self) -> str:
        return f"{self.path.name}#{','.join(self.columns)}" if self.columns else self.path.name


def read_id_pairs(spec: XrefSpec) -> list[tuple[str, str]]:
    """The (id, id) pairs of the file, as written (normalised by the crosswalk)."""
    if not spec.path.is_file():
        raise DataError(f"--xrefs {spec.path}: no such file")
    with open(spec.path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None or len(header) < 2:
            raise DataError(f"{spec.path}:1: an id mapping file needs a header of at least two columns")
        if spec.columns is None:
            first, second = 0, 1
        else:
            missing = [name for name in spec.columns if name not in header]
            if missing:
                raise DataError(f"{spec.path}:1: no column(s) {missing} in the header {header}")
            first, second = header.index(spec.columns[0]), header.index(spec.columns[1])
        pairs = []
        for number, row in enumerate(reader, start=2):
            if len(row) <= max(first, second):
                raise DataError(f"{spec.path}:{number}: {len(row)} columns, the header has {len(header)}")
            a, b = row[first].strip(), row[second].strip()
            if a and b:
                pairs.append((a, b))
    return pairs
