"""Edit requests and evaluation cases: plain, validated, immutable data.

An :class:`EditRequest` says "in this prompt, about this subject, the model should now answer
``target_new``". A :class:`Case` adds the probes that measure the edit: rephrases
(generalization), locality prompts with their answers (what must not change) and portability
prompts (consequences of the new fact).

Validation happens at construction, so a bad request fails before any model work starts, with a
message that names the field and the fix.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kedit.errors import RequestError

SUBJECT_SLOT = "{}"


def _require_text(value: Any, name: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise RequestError(f"{name} must be a string, got {type(value).__name__}: {value!r}")
    if not allow_empty and not value.strip():
        raise RequestError(f"{name} is empty or whitespace only; give the text it should contain")
    return value


def _template_from(prompt: str, subject: str) -> str:
    """Return the prompt with exactly one ``{}`` where the subject goes."""
    slots = prompt.count(SUBJECT_SLOT)
    if slots > 1:
        raise RequestError(
            f"prompt has {slots} '{{}}' slots; use exactly one for the subject: {prompt!r}"
        )
    if slots == 1:
        rest = prompt.replace(SUBJECT_SLOT, "")
        if "{" in rest or "}" in rest:
            raise RequestError(f"prompt has a stray brace besides the '{{}}' subject slot: {prompt!r}")
        return prompt
    if "{" in prompt or "}" in prompt:
        raise RequestError(f"prompt has a stray brace and no '{{}}' subject slot: {prompt!r}")
    position = prompt.find(subject)
    if position < 0:
        raise RequestError(
            f"subject {subject!r} does not occur in prompt {prompt!r}; "
            "write the subject verbatim in the prompt or put '{}' where it goes"
        )
    return prompt[:position] + SUBJECT_SLOT + prompt[position + len(subject) :]


@dataclass(frozen=True)
class EditRequest:
    """One fact to write into the model.

    ``prompt`` either contains ``{}`` where the subject goes or contains the subject verbatim (its
    first occurrence becomes the slot). After construction ``prompt`` always holds the ``{}`` form;
    :attr:`text` is the filled prompt. ``extra_targets`` are further correct answers besides
    ``target_new`` (a one-to-many relation); only methods that write several labels at once
    (``mle``) use them, the others edit ``target_new``.
    """

    prompt: str
    subject: str
    target_new: str
    target_true: str | None = None
    extra_targets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _require_text(self.prompt, "prompt")
        subject = _require_text(self.subject, "subject")
        if subject != subject.strip():
            raise RequestError(f"subject {subject!r} has leading or trailing whitespace; strip it")
        _require_text(self.target_new, "target_new")
        if self.target_true is not None:
            # target_new may equal target_true: the long-tail protocol injects the true answer.
            _require_text(self.target_true, "target_true")
        object.__setattr__(self, "prompt", _template_from(self.prompt, subject))
        object.__setattr__(self, "target_new", self.target_new.strip())
        if self.target_true is not None:
            object.__setattr__(self, "target_true", self.target_true.strip())
        object.__setattr__(self, "extra_targets", _text_tuple(self.extra_targets, "extra_targets"))

    @property
    def text(self) -> str:
        """The prompt with the subject filled in."""
        return self.prompt.replace(SUBJECT_SLOT, self.subject)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> EditRequest:
        """Build from a dict; EasyEdit and CounterFact spellings are accepted.

        Accepted keys: ``prompt``, ``subject``, ``target_new`` (or ``{"str": ...}``),
        ``target_true`` / ``ground_truth``; a CounterFact ``requested_rewrite`` record works too.
        """
        if not isinstance(record, Mapping):
            raise RequestError(f"an edit request must be a mapping, got {type(record).__name__}")
        if "requested_rewrite" in record:
            record = record["requested_rewrite"]
        missing = [key for key in ("prompt", "subject", "target_new") if key not in record]
        if missing:
            raise RequestError(f"edit request is missing {', '.join(missing)}; got keys {sorted(record)}")
        target_true = record.get("target_true", record.get("ground_truth"))
        extra = record.get("extra_targets") or ()
        return cls(
            prompt=record["prompt"],
            subject=record["subject"],
            target_new=_unwrap_target(record["target_new"], "target_new"),
            target_true=None if target_true is None else _unwrap_target(target_true, "target_true"),
            extra_targets=extra if isinstance(extra, str) else tuple(_unwrap_target(t, "extra_targets") for t in extra),
        )


def _text_tuple(values: Any, name: str) -> tuple[str, ...]:
    """A list or tuple of non-empty strings, each stripped (a bare string is refused: it is not a list)."""
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise RequestError(f"{name} must be a list of strings, got {type(values).__name__}: {values!r}")
    return tuple(_require_text(value, f"{name}[{index}]").strip() for index, value in enumerate(values))


def _unwrap_target(value: Any, name: str) -> str:
    # CounterFact stores targets as {"str": "Rome", "id": "Q220"}; EasyEdit sometimes as lists.
    if isinstance(value, Mapping) and "str" in value:
        return value["str"]
    if isinstance(value, list) and len(value) == 1:
        return value[0]
    return value


def _probe_dict(probe: LocalityProbe | PortabilityProbe) -> dict[str, Any]:
    """``{"prompt", "answer"}``, plus ``"kind"`` only when the probe has one (so records written
    before probes had kinds, and their digests, stay as they were)."""
    record: dict[str, Any] = {"prompt": probe.prompt, "answer": probe.answer}
    if probe.kind is not None:
        record["kind"] = probe.kind
    return record


def _check_kind(kind: Any, name: str) -> None:
    if kind is not None:
        _require_text(kind, f"{name} kind")


@dataclass(frozen=True)
class LocalityProbe:
    """A prompt whose answer the edit must leave alone (``answer`` is teacher-forced when scoring).

    ``kind`` optionally names what sort of locality the probe measures, where a dataset tells them
    apart (the Yao et al. 2023 sets: ``pre-neighbour``, ``distract-neighbour``,
    ``unrelated-attribute``, ``commonsense``; see :mod:`kedit.data.portability`). ``None`` (the
    default) is a plain probe; it is left out of :meth:`to_dict`.
    """

    prompt: str
    answer: str
    kind: str | None = None

    def __post_init__(self) -> None:
        _require_text(self.prompt, "locality prompt")
        _require_text(self.answer, "locality answer")
        _check_kind(self.kind, "locality")

    def to_dict(self) -> dict[str, Any]:
        return _probe_dict(self)


@dataclass(frozen=True)
class PortabilityProbe:
    """A prompt whose answer should follow from the new fact.

    ``kind`` optionally names the sort of consequence (``one-hop``, ``subject-replace``,
    ``inverse-relation``: :mod:`kedit.data.portability`); ``None`` (the default) is left out of
    :meth:`to_dict`.
    """

    prompt: str
    answer: str
    kind: str | None = None

    def __post_init__(self) -> None:
        _require_text(self.prompt, "portability prompt")
        _require_text(self.answer, "portability answer")
        _check_kind(self.kind, "portability")

    def to_dict(self) -> dict[str, Any]:
        return _probe_dict(self)


@dataclass(frozen=True)
class Case:
    """A request plus the probes that measure it."""

    request: EditRequest
    rephrases: tuple[str, ...] = ()
    locality: tuple[LocalityProbe, ...] = ()
    portability: tuple[PortabilityProbe, ...] = ()
    case_id: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.request, EditRequest):
            raise RequestError(f"request must be an EditRequest, got {type(self.request).__name__}")
        object.__setattr__(self, "rephrases", tuple(self.rephrases))
        object.__setattr__(self, "locality", tuple(self.locality))
        object.__setattr__(self, "portability", tuple(self.portability))
        for index, rephrase in enumerate(self.rephrases):
            _require_text(rephrase, f"rephrases[{index}]")
        for name, probes, kind in (
            ("locality", self.locality, LocalityProbe),
            ("portability", self.portability, PortabilityProbe),
        ):
            for index, probe in enumerate(probes):
                if not isinstance(probe, kind):
                    raise RequestError(f"{name}[{index}] must be a {kind.__name__}, got {probe!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "case_id": self.case_id,
            **self.request.to_dict(),
            "rephrases": list(self.rephrases),
            "locality": [probe.to_dict() for probe in self.locality],
            "portability": [probe.to_dict() for probe in self.portability],
        }

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Case:
        """Build from the flat dict written by :meth:`to_dict` (and the demo set)."""
        request = EditRequest.from_dict(record)
        rephrases = record.get("rephrases", record.get("rephrase_prompts", ()))
        if isinstance(rephrases, str):
            rephrases = (rephrases,)
        return cls(
            request=request,
            rephrases=tuple(rephrases),
            locality=tuple(_probe(LocalityProbe, item, "locality") for item in record.get("locality", ())),
            portability=tuple(
                _probe(PortabilityProbe, item, "portability") for item in record.get("portability", ())
            ),
            case_id=str(record.get("case_id", "")),
        )


def _probe(probe_type: type, item: Any, name: str) -> Any:
    if isinstance(item, Mapping):
        if "prompt" not in item or "answer" not in item:
            raise RequestError(f"each {name} probe needs 'prompt' and 'answer'; got keys {sorted(item)}")
        return probe_type(prompt=item["prompt"], answer=item["answer"], kind=item.get("kind"))
    if isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 2:
        return probe_type(prompt=item[0], answer=item[1])
    raise RequestError(f"a {name} probe must be {{'prompt': ..., 'answer': ...}} (and optionally 'kind'), got {item!r}")


def load_cases(path: str | Path) -> list[Case]:
    """Read cases from a JSON list (or JSON-lines) file written in the :meth:`Case.to_dict` form."""
    text = Path(path).read_text(encoding="utf-8")
    stripped = text.lstrip()
    records = json.loads(text) if stripped.startswith("[") else [
        json.loads(line) for line in text.splitlines() if line.strip()
    ]
    cases = []
    for index, record in enumerate(records):
        try:
            cases.append(Case.from_dict(record))
        except RequestError as error:
            raise RequestError(f"{path}: record {index}: {error}") from error
    return cases


def as_requests(items: EditRequest | Case | Iterable[EditRequest | Case]) -> list[EditRequest]:
    """Accept one request, one case, or a list of either; return requests."""
    if isinstance(items, EditRequest | Case):
        items = [items]
    requests = []
    for item in items:
        if isinstance(item, Case):
            requests.append(item.request)
        elif isinstance(item, EditRequest):
            requests.append(item)
        else:
            raise RequestError(f"expected EditRequest or Case, got {type(item).__name__}")
    if not requests:
        raise RequestError("no edit requests given")
    return requests
