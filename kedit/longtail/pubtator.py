"""The PubTator text format: documents, their mentions and annotated relations.

A document is a block of lines, blocks separated by blank lines::

    227508|t|Naloxone reverses the antihypertensive effect of clonidine.
    227508|a|In unanesthetized, spontaneously hypertensive rats ...
    227508<TAB>0<TAB>8<TAB>Naloxone<TAB>Chemical<TAB>D009270                mention: 6 columns
    227508<TAB>0<TAB>28<TAB>Ocular and ...<TAB>Disease<TAB>D014786|D006311<TAB>Ocular toxicity|...   7 (BC5CDR composite)
    227508<TAB>CID<TAB>D008750<TAB>D007022                                 relation: 4 columns
    10491763<TAB>Association<TAB>3175<TAB>D003924<TAB>No                    relation: 5 (BioRED novelty)

Offsets count characters of ``title + " " + abstract``. Any other line, a count of columns other
than 4-7, non-integer offsets, or a line of another document inside a block is a
:class:`~kedit.errors.DataError` naming the file, the line and the field.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from kedit.errors import DataError
from kedit.longtail.documents import AnnotatedRelation, Document, Mention
from kedit.longtail.ids import normalise_id, split_ids

MENTION_COLUMNS = (6, 7)
RELATION_COLUMNS = (4, 5)


class _Block:
    """The lines of one document as they are read."""

    def __init__(self, doc_id: str, first_line: int) -> None:
        self.doc_id = doc_id
        self.first_line = first_line
        self.title = ""
        self.abstract = ""
        self.mentions: list[Mention] = []
        self.raw_relations: list[tuple[str, str, str]] = []
        self.kind_of_raw: dict[str, str] = {}


def _text_line(path: Path, number: int, line: str, block: _Block | None) -> _Block:
    doc_id, _, rest = line.partition("|")
    part, _, text = rest.partition("|")
    if block is None:
        block = _Block(doc_id, number)
    elif doc_id != block.doc_id:
        raise DataError(f"{path}:{number}: document {doc_id!r} starts before the blank line that ends "
                        f"document {block.doc_id!r} (line {block.first_line}); separate documents by a blank line")
    if part == "t":
        block.title = text.strip()
    elif part == "a":
        block.abstract = text.strip()
    else:
        raise DataError(f"{path}:{number}: field 2 of a text line is {part!r}; expected 't' (title) or 'a' (abstract)")
    return block


def _offset(path: Path, number: int, value: str, name: str) -> int:
    try:
        offset = int(value)
    except ValueError:
        raise DataError(f"{path}:{number}: field {name} is {value!r}, not a character offset (an integer)") from None
    if offset < 0:
        raise DataError(f"{path}:{number}: field {name} is negative ({offset})")
    return offset


def _annotation_line(path: Path, number: int, columns: list[str], block: _Block | None) -> _Block:
    doc_id = columns[0]
    if block is None:
        block = _Block(doc_id, number)
    elif doc_id != block.doc_id:
        raise DataError(f"{path}:{number}: field 1 (document id) is {doc_id!r} inside document "
                        f"{block.doc_id!r} (line {block.first_line}); separate documents by a blank line")
    # A mention's second and third fields are offsets; a relation's second is its type (CID, Association).
    is_mention = len(columns) >= 3 and columns[1].strip().isdigit() and columns[2].strip().isdigit()
    if is_mention and len(columns) not in MENTION_COLUMNS:
        raise DataError(f"{path}:{number}: a PubTator mention line has {len(columns)} tab-separated columns; "
                        "expected 6 or 7 (PMID, start, end, text, type, ids[, names])")
    if len(columns) in MENTION_COLUMNS:
        start = _offset(path, number, columns[1], "2 (start)")
        end = _offset(path, number, columns[2], "3 (end)")
        if end < start:
            raise DataError(f"{path}:{number}: field 3 (end {end}) is before field 2 (start {start})")
        kind = columns[4].strip()
        ids = split_ids(columns[5], kind)
        names = tuple(name.strip() for name in columns[6].split("|")) if len(columns) == 7 else ()
        block.mentions.append(Mention(start=start, end=end, text=columns[3], kind=kind, ids=ids,
                                      names=names if len(names) == len(ids) else ()))
        for raw in columns[5].replace(",", "|").replace(";", "|").replace("+", "|").split("|"):
            block.kind_of_raw.setdefault(raw.strip(), kind)
    elif len(columns) in RELATION_COLUMNS:
        block.raw_relations.append((columns[1].strip(), columns[2].strip(), columns[3].strip()))
    else:
        raise DataError(f"{path}:{number}: a PubTator annotation line has {len(columns)} tab-separated columns; "
                        "expected 6 or 7 for a mention (PMID, start, end, text, type, ids[, names]) "
                        "or 4 or 5 for a relation (PMID, type, id1, id2[, novelty])")
    return block


def _finish(path: Path, block: _Block) -> Document:
    text_length = len(block.title) + 1 + len(block.abstract) if block.title else len(block.abstract)
    for mention in block.mentions:
        if mention.end > text_length:
            raise DataError(f"{path}: document {block.doc_id} (line {block.first_line}): a mention ends at "
                            f"{mention.end}, past the end of its title + abstract ({text_length} characters)")
    relations = tuple(
        AnnotatedRelation(kind=kind, first=normalise_id(first, block.kind_of_raw.get(first, "")),
                          second=normalise_id(second, block.kind_of_raw.get(second, "")))
        for kind, first, second in block.raw_relations
    )
    return Document(doc_id=block.doc_id, title=block.title, abstract=block.abstract,
                    mentions=tuple(block.mentions), relations=relations, source=path.name)


def read_pubtator(path: Path) -> Iterator[Document]:
    """The documents of a PubTator file, in file order."""
    block: _Block | None = None
    with open(path, encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.rstrip("\n").rstrip("\r")
            if not line.strip():
                if block is not None:
                    yield _finish(path, block)
                    block = None
                continue
            columns = line.split("\t")
            if len(columns) == 1:
                if line.count("|") < 2:
                    raise DataError(f"{path}:{number}: neither a text line (PMID|t|title, PMID|a|abstract) "
                                    "nor a tab-separated annotation line")
                block = _text_line(path, number, line, block)
            else:
                block = _annotation_line(path, number, columns, block)
    if block is not None:
        yield _finish(path, block)
