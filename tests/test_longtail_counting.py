"""DuckDB co-occurrence counts: a hand-made corpus where the document and sentence levels differ, a
random corpus against counts by Python sets, and the MEDLINE count table filling all four bins."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from kedit.longtail.bins import Bins
from kedit.longtail.count_tables import TableSpec, read_pair_counts
from kedit.longtail.counting import CountSettings, count_cooccurrences
from kedit.longtail.linking import Crosswalk
from kedit.longtail.tables import read_rows, table
from kedit.longtail.triples import Entity
from kedit.longtail.xrefs import XrefSpec, read_id_pairs
from tests.requirements import SHARED_DATA, require

A, B, C, D = 0, 1, 2, 3
# (doc, sentence, entity) — doc 0: "A B. C."  doc 1: "A. B."  doc 2: "A B B. A."  doc 3: "C."
# doc 4: "A B. A B. B A." (three sentences with both)
MENTIONS = [
    (0, 0, A), (0, 0, B), (0, 1, C),
    (1, 0, A), (1, 1, B),
    (2, 0, A), (2, 0, B), (2, 0, B), (2, 1, A),
    (3, 0, C),
    (4, 0, A), (4, 0, B), (4, 1, A), (4, 1, B), (4, 2, B), (4, 2, A),
]
PAIRS = [(A, B), (A, C), (B, C), (C, D), (B, A)]


def _count(tmp_path: Path, mentions, pairs, parts: int = 2):
    files = []
    for index in range(parts):
        rows = [{"doc": d, "sentence": s, "entity": e, "method": "id", "start": 0, "end": 1}
                for position, (d, s, e) in enumerate(mentions) if position % parts == index]
        path = tmp_path / f"part-{index}.parquet"
        import pyarrow.parquet as pq

        pq.write_table(table("mentions", rows), path)
        files.append(path)
    pairs_path = tmp_path / "pairs.parquet"
    import pyarrow.parquet as pq

    pq.write_table(table("pairs", [{"subject": s, "object": o} for s, o in pairs]), pairs_path)
    summary = count_cooccurrences(files, pairs_path, tmp_path / "counts.parquet", tmp_path / "frequencies.parquet",
                                  CountSettings(memory_limit="256MB", threads=1, temp_directory=tmp_path / "spill"))
    counts = {(r["subject"], r["object"]): (r["documents"], r["sentences"]) for r in read_rows([tmp_path / "counts.parquet"])}
    frequencies = {r["entity"]: (r["documents"], r["sentences"]) for r in read_rows([tmp_path / "frequencies.parquet"])}
    return counts, frequencies, summary


def test_document_and_sentence_counts_on_a_hand_made_corpus(tmp_path):
    counts, frequencies, summary = _count(tmp_path, MENTIONS, PAIRS)
    assert counts == {
        (A, B): (4, 5),   # documents 0, 1, 2, 4; sentences 0/0, 2/0, 4/0, 4/1, 4/2 (doc 1 has them apart)
        (B, A): (4, 5),   # the same pair the other way round
        (A, C): (1, 0),   # together in document 0, never in one sentence
        (B, C): (1, 0),
        (C, D): (0, 0),   # D is never mentioned: a zero, not a missing row
    }
    # A: sentences 0/0, 1/0, 2/0, 2/1, 4/0, 4/1, 4/2; B: 0/0, 1/1, 2/0, 4/0, 4/1, 4/2 (2/0 counts once)
    assert frequencies == {A: (4, 7), B: (4, 6), C: (2, 2)}
    assert (summary.pairs, summary.pairs_in_a_document, summary.pairs_in_a_sentence, summary.entities) == (5, 4, 2, 3)


def test_counts_match_python_sets_on_a_random_corpus(tmp_path):
    rng = random.Random(7)
    mentions = [(doc, rng.randrange(4), rng.choice(range(12))) for doc in range(300) for _ in range(rng.randrange(1, 9))]
    pairs = sorted({(rng.randrange(12), rng.randrange(12)) for _ in range(60)})
    counts, frequencies, _ = _count(tmp_path, mentions, pairs, parts=3)
    docs: dict[int, set[int]] = {}
    sentences: dict[int, set[tuple[int, int]]] = {}
    for doc, sentence, entity in mentions:
        docs.setdefault(entity, set()).add(doc)
        sentences.setdefault(entity, set()).add((doc, sentence))
    for s, o in pairs:
        expected = (len(docs.get(s, set()) & docs.get(o, set())), len(sentences.get(s, set()) & sentences.get(o, set())))
        assert counts[(s, o)] == expected, (s, o)
    assert frequencies == {e: (len(docs[e]), len(sentences[e])) for e in docs}


def test_the_medline_count_table_fills_all_four_bins():
    folder = SHARED_DATA / "biomed" / "medline_cooccurrence"
    require((folder / "disease-disease-cooccurrence.tsv").is_file(), f"{folder}/disease-disease-cooccurrence.tsv")
    # entities keyed by MeSH, as a MeSH-linked corpus would have them; the table is keyed by Disease
    # Ontology ids and reaches them through the DO -> MeSH mapping file
    mapping = XrefSpec.parse(f"{folder / 'DO-slim-to-mesh.tsv'}#doid_code,mesh_id")
    pairs = read_id_pairs(mapping)
    entities = [Entity(f"MESH:{mesh}", mesh) for _, mesh in pairs]
    counts = read_pair_counts(TableSpec(folder / "disease-disease-cooccurrence.tsv"), Crosswalk(entities, pairs))
    mesh = dict(pairs)
    alzheimer, parkinson = f"MESH:{mesh['DOID:10652']}", f"MESH:{mesh['DOID:14330']}"
    assert counts[(alzheimer, parkinson)] == counts[(parkinson, alzheimer)] == 2760  # the table's first row
    bins = Bins()
    filled = {bins.label(count) for count in counts.values()}
    assert filled == set(bins.labels), filled
    per_bin = {label: sum(1 for count in counts.values() if bins.label(count) == label) for label in bins.labels}
    assert min(per_bin.values()) >= 100, per_bin


def test_count_table_columns_are_named_or_refused(tmp_path):
    path = tmp_path / "counts.tsv"
    path.write_text("a\tb\tn\nX:1\tX:2\t12\nX:2\tX:3\tmany\n", encoding="utf-8")
    walk = Crosswalk([Entity("X:1", "one"), Entity("X:2", "two"), Entity("X:3", "three")])
    with pytest.raises(Exception, match="cannot tell which columns"):
        read_pair_counts(TableSpec(path), walk)
    with pytest.raises(Exception, match=r"counts.tsv:3: field n is 'many'"):
        read_pair_counts(TableSpec.parse(f"{path}#a,b,n"), walk)


def test_sentence_spans_come_from_the_segmenter_not_a_full_stop_split():
    from kedit.longtail.documents import Document
    from kedit.longtail.sentences import sentence_of, sentence_spans

    document = Document("1", "Dose of aspirin.", "Dr. Smith gave 2.5 mg (i.e. a low dose). Rash appeared vs. none before.")
    spans = sentence_spans(document)
    assert [document.text[start:end] for start, end in spans] == [
        "Dose of aspirin.", "Dr. Smith gave 2.5 mg (i.e. a low dose).", "Rash appeared vs. none before."]
    starts = [start for start, _ in spans]
    assert [sentence_of(starts, document.text.index(word)) for word in ("aspirin", "Smith", "dose)", "Rash")] == [0, 1, 1, 2]
