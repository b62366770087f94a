"""Sentence spans of a document from a real segmenter (pysbd, rule-based, abbreviation-aware), not a regex.

The title is segmented on its own, then the abstract: a title never runs into the first sentence
of its abstract. pysbd returns sentence strings; their offsets are recovered by searching each one
in the text from where the previous one ended (pysbd's own ``char_span`` mode has returned wrong
spans for repeated sentences), so every span is exact. A mention belongs to the sentence its first
character is in (:func:`sentence_of`).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from kedit.longtail.documents import Document

SEGMENTER = "pysbd"


@lru_cache(maxsize=1)
def _segmenter() -> Any:
    import pysbd

    return pysbd.Segmenter(language="en", clean=False)


def segmenter_version() -> str:
    """What the sentence stage's cache key records about the segmenter."""
    import pysbd

    return f"{SEGMENTER}-{getattr(pysbd, '__version__', 'unknown')}"


def _spans(text: str, offset: int) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    cursor = 0
    for sentence in _segmenter().segment(text) if text.strip() else ():
        piece = sentence.strip()
        if not piece:
            continue
        start = text.find(piece, cursor)
        if start < 0:  # the segmenter changed the text; fall back to where the last sentence ended
            start = cursor
        end = min(len(text), start + len(piece))
        spans.append((offset + start, offset + end))
        cursor = end
    return spans


def sentence_spans(document: Document) -> list[tuple[int, int]]:
    """(start, end) of each sentence in :attr:`Document.text`, in order, not overlapping."""
    if not document.title:
        return _spans(document.abstract, 0)
    return _spans(document.title, 0) + _spans(document.abstract, len(document.title) + 1)


def sentence_of(starts: Sequence[int], position: int) -> int:
    """The index of the sentence (by sorted ``starts``) that ``position`` falls in (0 before the first)."""
    return max(0, bisect.bisect_right(starts, position) - 1)
