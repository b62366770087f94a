"""Linking mentions to triple entities: by id through xrefs and mapping pairs, by dictionary (word
boundaries, leftmost-longest, case-kept symbols, id spans win), by fuzzy ratio at its threshold, and the
SapBERT-style embedding linker on a tiny random encoder."""

from __future__ import annotations

import pytest

from kedit.errors import DataError
from kedit.longtail.documents import Document, Mention
from kedit.longtail.linking import (
    Crosswalk,
    Dictionary,
    LinkConfig,
    build_linker,
    is_symbol,
    normalise_name,
    normalise_with_offsets,
)
from kedit.longtail.triples import Entity

SEIZURE = Entity("HP:0001250", "Seizure", ("Seizures", "Epileptic seizure"), ("UMLS:C0036572", "MSH:D012640"))
CANCER = Entity("OMIM:114480", "Breast cancer")
CARCINOMA = Entity("HP:0003002", "Breast carcinoma", ("Breast cancer",))
CAT = Entity("NCBIGene:847", "CAT", ("catalase",))
NEPHRO = Entity("HP:0000112", "Nephrotoxicity")
ENTITIES = {e.id: e for e in (SEIZURE, CANCER, CARCINOMA, CAT, NEPHRO)}


def test_normalisation_keeps_a_map_back_to_the_text():
    text = "Beta-catenin  (CTNNB1)!"
    normalised, offsets = normalise_with_offsets(text)
    assert normalised == "beta catenin ctnnb1"
    assert text[offsets[normalised.index("ctnnb1")]] == "C"
    assert normalise_name("Alpha-methyldopa") == normalise_name("alpha methyldopa")
    assert is_symbol("CAT") and is_symbol("IL-6") and not is_symbol("Seizure") and not is_symbol("RETINOBLASTOMA")


def test_crosswalk_reaches_entities_through_xrefs_and_mapping_pairs():
    walk = Crosswalk(ENTITIES.values(), pairs=[("DOID:1612", "OMIM:114480"), ("D001943", "DOID:1612")])
    assert walk.lookup("MESH:D012640") == ("HP:0001250",)   # the ontology's MSH xref, spelled MESH by the corpus
    assert walk.lookup("D012640") == ("HP:0001250",)
    assert walk.lookup("hp:0001250") == ("HP:0001250",)
    assert walk.lookup("DOID:1612") == ("OMIM:114480",)     # one hop through the mapping file
    assert walk.lookup("MESH:D001943") == ()                 # two hops are not followed
    assert walk.lookup("MESH:D000001") == ()


def test_dictionary_matches_whole_words_leftmost_longest_and_symbols_in_their_case():
    dictionary = Dictionary(ENTITIES.values())
    text = "Seizures and breast cancer; a cat had CAT activity, not CATALASE-free breast carcinomas."
    found = [(text[start:end], ids) for start, end, ids in dictionary.find(text)]
    assert found == [
        ("Seizures", ("HP:0001250",)),
        ("breast cancer", ("HP:0003002", "OMIM:114480")),   # a name two entities share links to both
        ("CAT", ("NCBIGene:847",)),                          # the symbol, not the word "cat"
        ("CATALASE", ("NCBIGene:847",)),                     # a plain synonym, matched in any case
    ]  # "breast carcinomas": "breast carcinoma" does not end at a word boundary
    assert dictionary.exact("Epileptic  seizure") == ("HP:0001250",)


def test_dictionary_boundaries_and_the_shortest_name():
    dictionary = Dictionary([Entity("X:1", "catalase"), Entity("X:2", "ab"), Entity("X:3", "cancer"),
                             Entity("X:4", "breast cancer risk")])
    text = "Catalase-free; ab; precancerous; breast cancer risk."
    found = [text[start:end] for start, end, _ in dictionary.find(text)]
    # "Catalase" ends at the hyphen (a boundary); "ab" is below min_name_length 3; "cancer" inside
    # "precancerous" is not at a word boundary; the longest match at "breast" wins over "cancer"
    assert found == ["Catalase", "breast cancer risk"]


def _document() -> Document:
    title = "Seizures after catalase inhibition."
    abstract = "Nephrotoxicities and breast cancer were seen."
    text = f"{title} {abstract}"
    return Document("1", title, abstract, mentions=(
        Mention(0, 8, "Seizures", "Disease", ("MESH:D012640",)),                     # linked by id (xref)
        Mention(text.index("Nephro"), text.index("Nephro") + 16, "Nephrotoxicities", "Disease", ("MESH:D999999",)),
        Mention(text.index("breast"), text.index("breast") + 13, "breast cancer", "Disease", ("OMIM:114480",)),
    ))


def test_linker_id_first_then_dictionary_outside_id_spans():
    linker = build_linker(ENTITIES, LinkConfig(methods=("id", "dictionary")))
    links = linker.link(_document())
    text = _document().text
    got = {(text[link.start:link.end], link.entity, link.method) for link in links}
    assert got == {
        ("Seizures", "HP:0001250", "id"),
        ("catalase", "NCBIGene:847", "dictionary"),
        # the annotator's OMIM id decides this span: the dictionary's HP:0003002 for it is dropped
        ("breast cancer", "OMIM:114480", "id"),
    }  # "Nephrotoxicities" has an unknown id and no exact name: unlinked without fuzzy


def test_fuzzy_links_what_id_and_dictionary_missed_at_its_threshold():
    text = _document().text
    strict = build_linker(ENTITIES, LinkConfig(methods=("id", "dictionary", "fuzzy"), fuzzy_threshold=90))
    loose = build_linker(ENTITIES, LinkConfig(methods=("id", "dictionary", "fuzzy"), fuzzy_threshold=85))
    # ratio("nephrotoxicities", "nephrotoxicity") = 100 * 2 * 13 / 30 = 86.7: between the two thresholds
    assert not any(link.method == "fuzzy" for link in strict.link(_document()))
    fuzzy = [link for link in loose.link(_document()) if link.method == "fuzzy"]
    assert [(text[link.start:link.end], link.entity) for link in fuzzy] == [("Nephrotoxicities", "HP:0000112")]


def test_link_config_refuses_unknown_linkers_and_thresholds():
    with pytest.raises(DataError, match="unknown linker"):
        LinkConfig(methods=("id", "magic"))
    with pytest.raises(DataError, match="fuzzy-threshold"):
        LinkConfig(fuzzy_threshold=0)


def test_embedding_linker_links_a_mention_to_its_nearest_name():
    torch = pytest.importorskip("torch")
    from types import SimpleNamespace

    from transformers import BertTokenizerFast

    from kedit.longtail.sapbert import EmbeddingLinker

    class BagOfWords(torch.nn.Module):
        """An encoder whose [CLS] output is the mean embedding of the text's tokens (a random
        BERT's [CLS] vectors are all nearly parallel, so they could not tell names apart)."""

        def __init__(self, vocabulary: int) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.embedding = torch.nn.Embedding(vocabulary, 8)

        def forward(self, input_ids, attention_mask, **_):
            vectors = self.embedding(input_ids) * attention_mask[..., None]  # (batch, tokens, 8)
            pooled = vectors.sum(1) / attention_mask.sum(1, keepdim=True)
            return SimpleNamespace(last_hidden_state=torch.cat([pooled[:, None], vectors], dim=1))

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "seizure", "breast", "cancer", "nephro", "##toxicity", "cat"]
    tokenizer = BertTokenizerFast(vocab={word: index for index, word in enumerate(words)})
    model = BagOfWords(len(words))
    entities = [Entity("A", "seizure"), Entity("B", "breast cancer")]
    linker = EmbeddingLinker(model, tokenizer, entities, threshold=0.85)
    # a name embeds to its own unit vector: cosine 1 with itself, so each name finds its own entity
    assert linker.match(["seizure", "breast cancer", "cancer breast"]) == [("A",), ("B",), ("B",)]
    # the threshold: a mention links only when its best cosine exceeds it
    mention = "nephrotoxicity cat"
    similarity = linker.embed([mention]) @ linker.embed(["seizure", "breast cancer"]).T  # (1, 2)
    best = float(similarity.max())
    assert best < 0.99
    winner = ("A",) if int(similarity.argmax()) == 0 else ("B",)
    assert EmbeddingLinker(model, tokenizer, entities, threshold=best - 1e-4).match([mention]) == [winner]
    assert EmbeddingLinker(model, tokenizer, entities, threshold=best + 1e-4).match([mention]) == [()]
