"""p(o | s, r): the single scoring primitive of every Pitfalls metric (SPEC A.2).

Per prompt x (a template filled with the subject) the probability of the object o is the
teacher-forced geometric mean of its token probabilities, exp(mean_j log p(t_j | x, t_<j)), with o
scored after one leading space. A fact's probability S(s, r, o) is the arithmetic mean over its
prompt set: the relation's edit prompt followed by the relation's paraphrases (10 in the
benchmark files), all filled with s.

Every number comes from :func:`kedit.models.scoring.score` (one call per model state for all
facts of that state); this module runs no forward pass of its own. Two differences from the
reference code that do not change the numbers beyond floating-point noise: kedit left-pads its
batches with explicit position ids (the reference right-pads), and the split between prompt and
target tokens is taken from the joint tokenisation when the prompt's own tokens are a prefix of it
(the reference assumes they are). Templates are used verbatim, trailing spaces included, as the
reference does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kedit.data.pitfalls import Fact
from kedit.errors import DataError
from kedit.models.loading import LoadedModel
from kedit.models.scoring import score
from kedit.pitfalls.metrics import fact_probability
from kedit.requests import SUBJECT_SLOT


@dataclass(frozen=True)
class FactQuery:
    """A fact to score: the filled prompts and the object."""

    prompts: tuple[str, ...]  # [edit prompt, paraphrase 1, ...] with the subject filled in
    target: str


@dataclass(frozen=True)
class FactScore:
    """Per-prompt probabilities of one fact, in prompt order; ``value`` is S(s, r, o)."""

    per_prompt: tuple[float, ...]

    @property
    def value(self) -> float:
        return fact_probability(self.per_prompt)


def fill(template: str, subject: str) -> str:
    return template.replace(SUBJECT_SLOT, subject)


def fact_query(fact: Fact, paraphrases: Mapping[str, Sequence[str]]) -> FactQuery:
    """The prompt set of ``fact``: its edit prompt, then its relation's paraphrases, filled with the subject."""
    if fact.relation_id not in paraphrases:
        raise DataError(f"no paraphrase prompts for relation {fact.relation_id}; "
                        f"the prompt file has {', '.join(sorted(paraphrases))}")
    templates = (fact.prompt, *paraphrases[fact.relation_id])
    return FactQuery(tuple(fill(template, fact.subject) for template in templates), fact.object)


def score_facts(lm: LoadedModel, queries: Sequence[FactQuery]) -> list[FactScore]:
    """Score every query on the model as it is now, in one :func:`score` call."""
    pairs = [(prompt, query.target) for query in queries for prompt in query.prompts]
    scored = score(lm, pairs) if pairs else []
    results, offset = [], 0
    for query in queries:
        chunk = scored[offset : offset + len(query.prompts)]
        results.append(FactScore(tuple(item.geometric_mean_prob for item in chunk)))
        offset += len(query.prompts)
    return results


def score_named(lm: LoadedModel, queries: Mapping[str, FactQuery]) -> dict[str, FactScore]:
    """:func:`score_facts` over a name -> query mapping (one call), keeping the names."""
    names = list(queries)
    return dict(zip(names, score_facts(lm, [queries[name] for name in names]), strict=True))


def scores_block(protocol: str, probabilities: Mapping[str, Mapping[str, FactScore]],
                 metrics: Mapping[str, float]) -> dict:
    """The ``pitfalls`` part of a case record: S of every fact at every state, its per-prompt
    values, and the case's metrics (shared by the conflict and round records)."""
    return {
        "protocol": protocol,
        "probabilities": {state: {name: s.value for name, s in facts.items()} for state, facts in probabilities.items()},
        "per_prompt": {state: {name: list(s.per_prompt) for name, s in facts.items()}
                       for state, facts in probabilities.items()},
        "metrics": dict(metrics),
    }
