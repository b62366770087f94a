"""The long-tail knowledge suite (Yi et al. 2025, "Can We Edit LLMs for Long-Tail Biomedical Knowledge?").

Documents + triples -> linked mentions -> subject-object co-occurrence counts (document and sentence
level) -> frequency bins and cardinality -> a benchmark folder of cases (:mod:`kedit.longtail.schema`)
-> stratified probing and editing. Imports no torch at package import.
"""
