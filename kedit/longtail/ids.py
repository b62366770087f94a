"""Concept ids in one spelling, so a MeSH id from a PubTator file meets the MeSH xref of an ontology term.

Corpora and ontologies spell the same id differently: ``D009270`` (BC5CDR), ``MESH:D009270``
(PubTator3, MONDO), ``MSH:D009270`` (UMLS-style xrefs), ``OMIM:610102`` / ``MIM:610102``, a bare
NCBI Gene number ``3175`` (BioRED) / ``NCBIGene:3175``. :func:`normalise_id` maps each to
``PREFIX:local`` with one canonical prefix; an unknown prefix is kept as written (upper-cased, so
``doid:1`` and ``DOID:1`` agree).
"""

from __future__ import annotations

import re

# Spellings of a prefix -> the one kedit writes. Keys are upper-case.
PREFIXES: dict[str, str] = {
    "MESH": "MESH", "MSH": "MESH", "MESHID": "MESH",
    "OMIM": "OMIM", "MIM": "OMIM",
    "UMLS": "UMLS", "UMLS_CUI": "UMLS", "CUI": "UMLS",
    "NCBIGENE": "NCBIGene", "GENE": "NCBIGene", "ENTREZ": "NCBIGene", "NCBIGENEID": "NCBIGene",
    "NCBITAXON": "NCBITaxon", "TAXON": "NCBITaxon",
    "HP": "HP", "HPO": "HP",
    "ORPHA": "ORPHA", "ORPHANET": "ORPHA",
    "DOID": "DOID", "MONDO": "MONDO", "DECIPHER": "DECIPHER",
    "SNOMEDCT": "SNOMEDCT", "SNOMEDCT_US": "SNOMEDCT", "SCTID": "SNOMEDCT", "SNOMED": "SNOMEDCT",
    "CHEBI": "CHEBI", "GO": "GO", "CVCL": "Cellosaurus", "CELLOSAURUS": "Cellosaurus",
    "DBSNP": "dbSNP", "RS": "dbSNP",
}

_MESH_LOCAL = re.compile(r"^[CD]\d{6,9}$")
_BARE_NUMBER = re.compile(r"^\d+$")
# PubTator entity types whose bare numeric ids are NCBI Gene / NCBI Taxonomy ids.
_GENE_TYPES = frozenset({"gene", "geneorgeneproduct", "protein"})
_SPECIES_TYPES = frozenset({"species", "organismtaxon"})
_VARIANT_TYPES = frozenset({"mutation", "sequencevariant", "dnamutation", "proteinmutation", "snp",
                            "variant", "dnaallele", "proteinallele", "acidchange"})
_SEPARATORS = re.compile(r"[|,;+]")
NO_ID = frozenset({"", "-", "-1", "none", "null", "n/a"})


def normalise_id(text: str, kind: str = "") -> str:
    """``text`` as ``PREFIX:local`` (see the module docstring); ``kind`` is the mention's entity type,
    which says what a bare number is (a gene or a species)."""
    text = text.strip()
    prefix, colon, local = text.partition(":")
    if colon and prefix and not prefix.isdigit():
        key = prefix.upper().replace(" ", "").replace("-", "")  # tmVar3 writes "NCBI Gene:3577"
        canonical = PREFIXES.get(key, key)
        return f"{canonical}:{local.strip()}"
    if _MESH_LOCAL.match(text):
        return f"MESH:{text}"
    if text.startswith("CVCL_"):
        return f"Cellosaurus:{text}"
    if re.match(r"^rs\d+$", text):
        return f"dbSNP:{text}"
    kind_key = kind.strip().lower()
    if _BARE_NUMBER.match(text):
        if kind_key in _GENE_TYPES:
            return f"NCBIGene:{text}"
        if kind_key in _SPECIES_TYPES:
            return f"NCBITaxon:{text}"
    return f"{(kind.strip() or 'ID').upper()}:{text}"


def split_ids(field: str, kind: str = "") -> tuple[str, ...]:
    """The normalised ids of a mention's id field; ``()`` for "no id" (``-1``, ``-``, empty).

    Several ids are separated by ``|`` (BC5CDR composite mentions), ``,`` (BioRED), ``;`` or ``+``
    (NCBI Disease). A variant's id is one id even when it contains ``|`` (tmVar's ``c|SUB|C|262|T``).
    """
    field = field.strip()
    if field.lower() in NO_ID:
        return ()
    if kind.strip().lower() in _VARIANT_TYPES:
        return (normalise_id(field, kind),)
    parts = [part.strip() for part in _SEPARATORS.split(field)]
    seen: dict[str, None] = {}
    for part in parts:
        if part.lower() not in NO_ID:
            seen[normalise_id(part, kind)] = None
    return tuple(seen)
