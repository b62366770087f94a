"""Second-moment statistics of MLP keys over a text corpus."""

from kedit.stats.corpus import Corpus, files_corpus, resolve_corpus, stdlib_corpus, wikipedia_corpus
from kedit.stats.second_moment import collect_second_moments, second_moments

__all__ = [
    "Corpus",
    "collect_second_moments",
    "files_corpus",
    "resolve_corpus",
    "second_moments",
    "stdlib_corpus",
    "wikipedia_corpus",
]
