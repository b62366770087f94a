"""Measuring edits: the scoring primitive, metrics of both protocols, and evaluation of cases."""

from kedit.evaluate.evaluation import evaluate, summarize
from kedit.evaluate.metrics import ngram_entropy
from kedit.models.scoring import TargetScore, score, top_next_tokens

__all__ = ["TargetScore", "evaluate", "ngram_entropy", "score", "summarize", "top_next_tokens"]
