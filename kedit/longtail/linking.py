"""Linking mentions in documents to the entities of a triple set: by id, by dictionary, by fuzzy match.

Three linkers, used in this order (each a choice of ``LinkConfig.methods``):

* ``id`` — a mention that carries concept ids (PubTator, BioC) is linked to every entity one of its
  ids reaches through the :class:`Crosswalk`: the entity's own id, its ontology xrefs (MeSH, OMIM,
  UMLS …, normalised by :func:`kedit.longtail.ids.normalise_id`) and extra id pairs (a mapping file
  such as the Disease Ontology -> MeSH table). One hop: a pair (a, b) links a mention of ``a`` to
  the entities ``b`` reaches, and the other way round.
* ``dictionary`` — the whole text is scanned (Aho–Corasick, ``pyahocorasick``) for the normalised
  names and synonyms of the entities (:func:`normalise_name`: case-folded, every run of
  non-alphanumerics one space), at word boundaries, leftmost-longest, without overlaps. Names that
  look like symbols (upper-case letters and digits, at most :data:`SYMBOL_LENGTH` characters:
  ``ATM``, ``CAT``, ``ALS``) match only in the same case, so the gene CAT does not match "cat";
  names shorter than ``min_name_length`` are never matched. A name several entities share links to
  all of them. A match overlapping a mention already linked by id is dropped: the annotator's id
  says what that span is.
* ``fuzzy`` (optional) — an annotated mention that neither its ids nor the dictionary linked is
  compared with every dictionary name by ``rapidfuzz``'s normalised Levenshtein ratio
  (``fuzz.ratio``, 0–100: 100 × (1 − insertions and deletions / total length)) and linked to the
  best name scoring at least ``fuzzy_threshold``. The default 90 takes one added or dropped
  character in a ten-letter name ("Seizures" ~ "seizure" is 93.3) and refuses a changed suffix
  ("Nephrotoxicities" ~ "nephrotoxicity" is 86.7).

The paper's embedding linker (SapBERT, cosine > 0.85) is :mod:`kedit.longtail.sapbert`, an option
for users who can download the model; nothing here needs it.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kedit.errors import DataError
from kedit.longtail.documents import Document, Mention
from kedit.longtail.ids import normalise_id
from kedit.longtail.triples import Entity

LINK_METHODS: tuple[str, ...] = ("id", "dictionary", "fuzzy", "sapbert")
SYMBOL_LENGTH = 6
DEFAULT_FUZZY_THRESHOLD = 90.0
DEFAULT_MIN_NAME_LENGTH = 3


@dataclass(frozen=True)
class LinkConfig:
    """Which linkers run and their thresholds (see the module docstring)."""

    methods: tuple[str, ...] = ("id", "dictionary")
    fuzzy_threshold: float = DEFAULT_FUZZY_THRESHOLD
    min_name_length: int = DEFAULT_MIN_NAME_LENGTH
    sapbert_model: str = "cambridgeltl/SapBERT-from-PubMedBERT-fulltext"
    sapbert_threshold: float = 0.85

    def __post_init__(self) -> None:
        unknown = [method for method in self.methods if method not in LINK_METHODS]
        if unknown or not self.methods:
            raise DataError(f"--link {','.join(self.methods)}: unknown linker(s) {unknown}; choose from "
                            f"{', '.join(LINK_METHODS)} (comma-separated)")
        if not 0 < self.fuzzy_threshold <= 100:
            raise DataError(f"--fuzzy-threshold must be in (0, 100], got {self.fuzzy_threshold}")
        if not 0 < self.sapbert_threshold <= 1:
            raise DataError(f"the SapBERT threshold must be a cosine in (0, 1], got {self.sapbert_threshold}")

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {"methods": list(self.methods), "min_name_length": self.min_name_length}
        if "fuzzy" in self.methods:
            record["fuzzy_threshold"] = self.fuzzy_threshold
        if "sapbert" in self.methods:
            record["sapbert_model"] = self.sapbert_model
            record["sapbert_threshold"] = self.sapbert_threshold
        return record


@dataclass(frozen=True)
class Link:
    """One linked span: ``entity`` is an entity id of the triple set; ``method`` the linker that found it."""

    start: int
    end: int
    entity: str
    method: str


def _fold(character: str, keep_case: bool) -> str:
    return character if keep_case else character.casefold()


def normalise_with_offsets(text: str, keep_case: bool = False) -> tuple[str, list[int]]:
    """``text`` case-folded (unless ``keep_case``), each run of non-alphanumerics one space, no
    leading or trailing space; and for every character of the result the offset in ``text`` it
    came from (so a match in the normalised text maps back to a span of the original)."""
    text = unicodedata.normalize("NFC", text)
    characters: list[str] = []
    offsets: list[int] = []
    space_pending = False
    for position, character in enumerate(text):
        if character.isalnum():
            if space_pending and characters:
                characters.append(" ")
                offsets.append(position - 1)
            space_pending = False
            for folded in _fold(character, keep_case):
                characters.append(folded)
                offsets.append(position)
        else:
            space_pending = True
    return "".join(characters), offsets


def normalise_name(text: str, keep_case: bool = False) -> str:
    """The key a name or mention is matched by (see :func:`normalise_with_offsets`)."""
    return normalise_with_offsets(text, keep_case)[0]


def is_symbol(name: str) -> bool:
    """A short all-capitals name (gene symbol, abbreviation), matched case-sensitively."""
    compact = name.replace("-", "").replace(" ", "")
    return (0 < len(compact) <= SYMBOL_LENGTH and compact.isalnum() and compact.upper() == compact
            and any(character.isalpha() for character in compact))


class Crosswalk:
    """Mention ids -> entity ids: each entity's id and xrefs, plus extra id pairs (one hop)."""

    def __init__(self, entities: Iterable[Entity], pairs: Iterable[tuple[str, str]] = ()) -> None:
        reach: dict[str, set[str]] = {}
        for entity in entities:
            for key in (entity.id, *entity.xrefs):
                reach.setdefault(normalise_id(key), set()).add(entity.id)
        extra: dict[str, set[str]] = {}
        for first, second in pairs:
            first, second = normalise_id(first), normalise_id(second)
            for source, target in ((first, second), (second, first)):
                if target in reach:
                    extra.setdefault(source, set()).update(reach[target])
        for key, targets in extra.items():
            reach.setdefault(key, set()).update(targets)
        self._reach = {key: tuple(sorted(targets)) for key, targets in reach.items()}

    def lookup(self, mention_id: str) -> tuple[str, ...]:
        """The entity ids ``mention_id`` (normalised) reaches, sorted; ``()`` for none."""
        return self._reach.get(normalise_id(mention_id), ())

    def __len__(self) -> int:
        return len(self._reach)


class Dictionary:
    """Entity names and synonyms as two Aho–Corasick automata: case-folded, and case-kept for symbols."""

    def __init__(self, entities: Iterable[Entity], min_name_length: int = DEFAULT_MIN_NAME_LENGTH) -> None:
        import ahocorasick

        folded: dict[str, set[str]] = {}
        exact: dict[str, set[str]] = {}
        for entity in entities:
            for name in (entity.name, *entity.synonyms):
                symbol = is_symbol(name)
                key = normalise_name(name, keep_case=symbol)
                if len(key.replace(" ", "")) < min_name_length:
                    continue
                (exact if symbol else folded).setdefault(key, set()).add(entity.id)
        self.keys: dict[str, tuple[str, ...]] = {key: tuple(sorted(ids)) for key, ids in folded.items()}
        self.symbols: dict[str, tuple[str, ...]] = {key: tuple(sorted(ids)) for key, ids in exact.items()}
        self._automata = []
        for keys, keep_case in ((self.keys, False), (self.symbols, True)):
            automaton = ahocorasick.Automaton()
            for key, ids in keys.items():
                automaton.add_word(key, (key, ids))
            if len(automaton):
                automaton.make_automaton()
                self._automata.append((automaton, keep_case))

    def __len__(self) -> int:
        return len(self.keys) + len(self.symbols)

    def exact(self, text: str) -> tuple[str, ...]:
        """The entities whose name ``text`` is (normalised; symbols in the same case)."""
        return self.keys.get(normalise_name(text), ()) or self.symbols.get(normalise_name(text, keep_case=True), ())

    def find(self, text: str) -> list[tuple[int, int, tuple[str, ...]]]:
        """Leftmost-longest non-overlapping matches at word boundaries: (start, end, entity ids),
        offsets into ``text``."""
        candidates: list[tuple[int, int, tuple[str, ...]]] = []
        for automaton, keep_case in self._automata:
            normalised, offsets = normalise_with_offsets(text, keep_case)
            for last, (key, ids) in automaton.iter(normalised):
                first = last - len(key) + 1
                if (first == 0 or normalised[first - 1] == " ") and (last + 1 == len(normalised) or normalised[last + 1] == " "):
                    candidates.append((offsets[first], offsets[last] + 1, ids))
        candidates.sort(key=lambda match: (match[0], -(match[1] - match[0])))
        chosen: list[tuple[int, int, tuple[str, ...]]] = []
        reached = -1
        for start, end, ids in candidates:
            if start >= reached:
                chosen.append((start, end, ids))
                reached = end
        return chosen


class FuzzyMatcher:
    """The best dictionary name within ``threshold`` (rapidfuzz ``fuzz.ratio``) of a mention, cached per text."""

    def __init__(self, dictionary: Dictionary, threshold: float) -> None:
        self._dictionary = dictionary
        self._names = list(dictionary.keys)
        self._threshold = threshold
        self._cache: dict[str, tuple[str, ...]] = {}

    def match(self, text: str) -> tuple[str, ...]:
        key = normalise_name(text)
        if key not in self._cache:
            from rapidfuzz import fuzz, process

            best = process.extractOne(key, self._names, scorer=fuzz.ratio, score_cutoff=self._threshold) if key else None
            self._cache[key] = self._dictionary.keys[best[0]] if best else ()
        return self._cache[key]


def _overlaps(start: int, end: int, spans: Sequence[tuple[int, int]]) -> bool:
    return any(start < other_end and other_start < end for other_start, other_end in spans)


@dataclass(frozen=True)
class Linker:
    """Everything linking needs, built once per triple set (:func:`build_linker`)."""

    config: LinkConfig
    crosswalk: Crosswalk
    dictionary: Dictionary | None
    fuzzy: FuzzyMatcher | None
    embedding: Any = None  # kedit.longtail.sapbert.EmbeddingLinker when "sapbert" is chosen

    def link(self, document: Document) -> list[Link]:
        """The links of one document, sorted by (start, end, entity)."""
        links: list[Link] = []
        id_spans: list[tuple[int, int]] = []
        unlinked: list[Mention] = []
        for mention in document.mentions:
            entities = sorted({entity for mention_id in mention.ids for entity in self.crosswalk.lookup(mention_id)}) \
                if "id" in self.config.methods else []
            if entities:
                links.extend(Link(mention.start, mention.end, entity, "id") for entity in entities)
                id_spans.append((mention.start, mention.end))
            else:
                unlinked.append(mention)
        dictionary_spans: list[tuple[int, int]] = []
        if self.dictionary is not None:
            for start, end, entities in self.dictionary.find(document.text):
                if not _overlaps(start, end, id_spans):
                    links.extend(Link(start, end, entity, "dictionary") for entity in entities)
                    dictionary_spans.append((start, end))
        leftover = [mention for mention in unlinked if not _overlaps(mention.start, mention.end, dictionary_spans)]
        if self.fuzzy is not None:
            still = []
            for mention in leftover:
                entities = self.fuzzy.match(mention.text)
                links.extend(Link(mention.start, mention.end, entity, "fuzzy") for entity in entities)
                if not entities:
                    still.append(mention)
            leftover = still
        if self.embedding is not None and leftover:
            for mention, entities in zip(leftover, self.embedding.match([m.text for m in leftover]), strict=True):
                links.extend(Link(mention.start, mention.end, entity, "sapbert") for entity in entities)
        return sorted(set(links), key=lambda link: (link.start, link.end, link.entity, link.method))


def build_linker(entities: Mapping[str, Entity], config: LinkConfig,
                 pairs: Iterable[tuple[str, str]] = ()) -> Linker:
    """A :class:`Linker` over ``entities`` with the linkers ``config`` chooses."""
    crosswalk = Crosswalk(entities.values(), pairs)
    needs_names = bool({"dictionary", "fuzzy", "sapbert"} & set(config.methods))
    dictionary = Dictionary(entities.values(), config.min_name_length) if needs_names else None
    fuzzy = FuzzyMatcher(dictionary, config.fuzzy_threshold) if dictionary is not None and "fuzzy" in config.methods else None
    embedding = None
    if "sapbert" in config.methods:
        from kedit.longtail.sapbert import EmbeddingLinker

        embedding = EmbeddingLinker.from_pretrained(entities.values(), config.sapbert_model, config.sapbert_threshold)
    # With "dictionary" off, the names still serve fuzzy/SapBERT, but the text is not scanned.
    scanning = dictionary if "dictionary" in config.methods else None
    return Linker(config=config, crosswalk=crosswalk, dictionary=scanning, fuzzy=fuzzy, embedding=embedding)
