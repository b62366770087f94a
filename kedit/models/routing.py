"""Query routing: edits that answer some prompts with another model (SERAC's memory).

A *query router* is installed on a :class:`~kedit.models.loading.LoadedModel` by an edit that
changes no weight. Given the prompts of one call it says, per prompt, either ``None`` (the model
itself answers, as without the router) or ``(model, text)``: the :class:`LoadedModel` that answers
instead and the text that model is shown (for SERAC, the retrieved memory entry followed by the
prompt). Routers form a stack like prompt contexts: the newest router is asked first, and a prompt
it leaves alone is offered to the older ones.

Scoring (:func:`kedit.models.scoring.score`, :func:`~kedit.models.scoring.top_next_tokens`) and
generation (:func:`kedit.models.generation.generate`) split their prompts with
:func:`route_groups`, let each answering model handle its own share (the routed ones through the
same primitive, on the rewritten text), and put the results back in the caller's order. The
model's own share goes through its prompt contexts as before. With no router installed none of
this runs: those functions test ``lm.routers`` and take their unrouted path unchanged.

Routing decides on the prompt alone, never on the target being scored: the same prompt scored
with two targets (new and true object) is answered by the same model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from kedit.models.loading import LoadedModel

# prompts -> per prompt, None (the model itself answers) or (the LoadedModel that answers instead,
# the text it is shown); one entry per prompt, in the order given.
QueryRouter = Callable[[Sequence[str]], list[Any]]

T = TypeVar("T")


@dataclass(frozen=True)
class RouteGroup:
    """The prompts of one call that one model answers."""

    model: LoadedModel  # who answers
    indices: tuple[int, ...]  # positions of these prompts in the caller's list
    shown: tuple[str, ...]  # routed: the rewritten texts; the model's own share: the prompts as given
    routed: bool  # False for the share the model itself answers (through its prompt contexts)


def route_groups(lm: LoadedModel, prompts: Sequence[str]) -> list[RouteGroup]:
    """``prompts`` split by the model that answers each (``lm`` itself first, then routed models in
    the order they first answer a prompt)."""
    routes = lm.route(prompts)
    own = [index for index, route in enumerate(routes) if route is None]
    groups = [RouteGroup(lm, tuple(own), tuple(prompts[i] for i in own), False)] if own else []
    by_model: dict[int, tuple[LoadedModel, list[int], list[str]]] = {}
    for index, route in enumerate(routes):
        if route is None:
            continue
        model, text = route
        entry = by_model.setdefault(id(model), (model, [], []))
        entry[1].append(index)
        entry[2].append(text)
    groups += [RouteGroup(model, tuple(indices), tuple(texts), True) for model, indices, texts in by_model.values()]
    return groups


def gather(groups: Sequence[RouteGroup], answer: Callable[[RouteGroup], Sequence[T]], count: int) -> list[T]:
    """``answer(group)`` for every group (one result per prompt of the group, in its order), put back
    in the caller's order of ``count`` prompts."""
    results: list[Any] = [None] * count
    for group in groups:
        answered = answer(group)
        if len(answered) != len(group.indices):
            raise ValueError(f"{len(answered)} results for the {len(group.indices)} prompts of a route group")
        for index, result in zip(group.indices, answered, strict=True):
            results[index] = result
    return results
