"""IKE: In-context Knowledge Editing (Zheng et al., 2023). No weight changes: the new fact and k
retrieved demonstrations are put in front of every prompt the model is shown.

Demonstrations come from training cases (never the edited ones), three kinds per case, all in one
template (default ``"New Fact: {fact}\\nPrompt: {prompt} {answer}\\n\\n"``, fact = prompt + target):

* copy:   the case's own prompt and new target (the model should repeat the new fact);
* update: each rephrase with the new target (the new fact generalises);
* retain: each locality prompt with its own answer (unrelated facts stay).

For a query prompt q the model sees ``demonstrations + "New Fact: {fact}\\nPrompt: " + q``:

1. the fact is the edit's request whose copy demonstration is most cosine-similar to q (the only
   one when the edit holds a single request, then nothing is embedded at query time);
2. the k demonstrations are the k candidates nearest by cosine to the *retrieval vector*, among
   the pool plus the copy demonstrations of the edit's other requests. ``retrieval="fact"`` (the
   paper and EasyEdit: demonstrations are chosen for the new fact, the same for every query about
   it) uses the chosen request's copy-demonstration embedding; ``retrieval="query"`` uses q's;
3. they are ordered by ascending similarity, so the most similar sits next to the new fact.

Embeddings are sentence vectors from an :class:`kedit.methods.embeddings.Embedder`
(all-MiniLM-L6-v2 by default); the pool is embedded once per method object and pool file.
"""

from __future__ import annotations

import hashlib
import json
import string
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from kedit.edits.base import (
    check_base,
    check_combinable,
    check_files,
    manifest_of,
    read_manifest,
    register_kind,
    requests_of,
    save_edit_files,
)
from kedit.errors import EditStateError, KeditError, KeditWarning
from kedit.methods.base import register
from kedit.methods.embeddings import MINILM, Embedder, load_embedder
from kedit.methods.hparams import build_hparams
from kedit.models.loading import LoadedModel, PromptContext
from kedit.requests import Case, EditRequest, load_cases

DEFAULTS_YAML = Path(__file__).with_name("ike.yaml")
PROMPT_CONTEXT_KIND = "prompt-context"
DEMONSTRATIONS_FILE = "demonstrations.json"
EMBEDDINGS_FILE = "embeddings.safetensors"
RETRIEVAL_MODES = ("fact", "query")
DEMONSTRATION_FIELDS = frozenset({"fact", "prompt", "answer"})
EMBED_CHUNK = 1024  # texts per embedder call while building a pool (one progress-bar step)


def _template_fields(template: str, name: str) -> frozenset[str]:
    try:
        return frozenset(f for _, f, _, _ in string.Formatter().parse(template) if f is not None)
    except ValueError as error:
        raise KeditError(f"{name} {template!r} is not a valid format string: {error}") from error


@dataclass(frozen=True)
class IKEHparams:
    k: int = 16  # demonstrations per prompt (the paper uses 32 for GPT-J)
    pool_file: str | None = None  # JSON / JSON-lines of training cases (kedit.requests.load_cases)
    embedder: str = MINILM
    retrieval: str = "fact"  # "fact": nearest to the new fact (paper); "query": nearest to each prompt
    demonstration_template: str = "New Fact: {fact}\nPrompt: {prompt} {answer}\n\n"
    query_template: str = "New Fact: {fact}\nPrompt: "

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 0:
            raise KeditError(f"k must be a whole number >= 0 (demonstrations per prompt), got {self.k!r}")
        if self.retrieval not in RETRIEVAL_MODES:
            raise KeditError(f"retrieval must be one of {', '.join(RETRIEVAL_MODES)}, got {self.retrieval!r}")
        fields = _template_fields(self.demonstration_template, "demonstration_template")
        if fields != DEMONSTRATION_FIELDS:
            raise KeditError(f"demonstration_template must use exactly the fields {{fact}}, {{prompt}} and "
                             f"{{answer}}; it uses {sorted(fields)}")
        fields = _template_fields(self.query_template, "query_template")
        if fields != {"fact"}:
            raise KeditError(f"query_template must use exactly the field {{fact}} (the prompt follows it); "
                             f"it uses {sorted(fields)}")


def _alias_sentence_model(value: Any) -> tuple[str, Any]:
    # EasyEdit names the embedder by a local path ending in the model's name.
    if Path(str(value)).name == MINILM:
        return "embedder", MINILM
    raise KeditError(f"sentence_model_name {value!r}: kedit ships only {MINILM}; pass embedder={MINILM!r}")


def _alias_use_icl_examples(value: Any) -> tuple[str | None, Any]:
    # EasyEdit's switch between IKE (True) and its plain PROMPT method (False, no demonstrations).
    return (None, None) if value else ("k", 0)


ALIASES = {
    "sentence_model_name": _alias_sentence_model,
    "use_icl_examples": _alias_use_icl_examples,
    "results_dir": lambda value: (None, None),
}


def fact_text(request: EditRequest) -> str:
    """The new fact as one sentence: the filled prompt, a space, the new target."""
    return f"{request.text} {request.target_new}"


def render(template: str, request: EditRequest, prompt: str, answer: str) -> str:
    return template.format(fact=fact_text(request), prompt=prompt, answer=answer)


def case_demonstrations(case: Case, template: str) -> list[tuple[str, str]]:
    """(kind, text) of the copy, update (one per rephrase) and retain (one per locality probe) demonstrations."""
    request = case.request
    return (
        [("copy", render(template, request, request.text, request.target_new))]
        + [("update", render(template, request, rephrase, request.target_new)) for rephrase in case.rephrases]
        + [("retain", render(template, request, probe.prompt, probe.answer)) for probe in case.locality]
    )


def _embed(embedder: Embedder, texts: Sequence[str], what: str) -> torch.Tensor:
    """(n, d) float32 unit rows; in chunks with a progress bar when there are many texts."""
    chunks = [texts[start : start + EMBED_CHUNK] for start in range(0, len(texts), EMBED_CHUNK)]
    rows = [embedder.embed(chunk) for chunk in tqdm(chunks, desc=f"embedding {what}", disable=len(chunks) < 2)]
    if not rows:
        return torch.zeros((0, 0), dtype=torch.float32)
    embeddings = torch.cat(rows).float()
    if embeddings.ndim != 2 or embeddings.shape[0] != len(texts):
        raise KeditError(f"embedder {embedder.name!r} returned shape {tuple(embeddings.shape)} for {len(texts)} texts")
    return F.normalize(embeddings, dim=-1)


@dataclass(frozen=True)
class DemonstrationPool:
    """Rendered demonstrations and their unit-norm sentence embeddings (n, d)."""

    texts: tuple[str, ...]
    kinds: tuple[str, ...]
    embeddings: torch.Tensor  # (n, d) float32, rows of norm 1 (d = 0 for an empty pool)
    source: str = ""

    def __len__(self) -> int:
        return len(self.texts)


def build_pool(cases: Sequence[Case], embedder: Embedder, template: str, source: str = "") -> DemonstrationPool:
    """Render every case's copy, update and retain demonstrations and embed them."""
    rendered = [demo for case in cases for demo in case_demonstrations(case, template)]
    texts = tuple(text for _, text in rendered)
    return DemonstrationPool(texts, tuple(kind for kind, _ in rendered), _embed(embedder, texts, "IKE pool"), source)


def cosine_similarities(rows: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """Cosine of each row of ``rows`` (n, d) with ``vector`` (d,) → (n,)."""
    return F.normalize(rows.float(), dim=-1) @ F.normalize(vector.float(), dim=-1)


def nearest(similarities: torch.Tensor, k: int) -> list[int]:
    """Indices of the k largest ``similarities`` (n,), least similar first (the nearest ends last).

    Ties go to the lower index, so the choice does not depend on the sort implementation.
    """
    order = torch.sort(similarities, descending=True, stable=True).indices[:k]
    return order.flip(0).tolist()


@dataclass(frozen=True)
class Retrieval:
    """What one query prompt gets: the request whose fact is stated, and the demonstrations (in order)."""

    request_index: int
    demonstrations: tuple[str, ...]


@register_kind(PROMPT_CONTEXT_KIND)
@dataclass(eq=False)
class IKEEdit:
    """A prompt-context edit: ``apply`` installs a prefix provider on the model, ``revert`` removes it.

    ``request_embeddings`` (r, d) embed the requests' copy demonstrations. ``embedder`` is needed
    at query time only when the edit has several requests or retrieves by query; a loaded edit
    loads the one named ``embedder_name`` when first needed.

    Prompt contexts do not stack (a second one would be put in front of the first, and prompts
    would grow with every edit): edits kept one after another are :meth:`combine`-d into one edit
    over all their requests, whose queries each retrieve the nearest fact — a growing memory.
    """

    kind: ClassVar[str]
    stacks: ClassVar[bool] = False
    touches_parameters: ClassVar[bool] = False
    export_refusal: ClassVar[str | None] = (
        "changes no weight: it puts demonstrations in front of every prompt, which a model checkpoint cannot "
        "hold; save the edit (kedit edit --save DIR) and load it with kedit.load_edit")

    method: str
    requests: tuple[EditRequest, ...]
    hparams: Mapping[str, Any]
    pool: DemonstrationPool
    request_embeddings: torch.Tensor
    embedder_name: str
    base_fingerprint: str
    info: dict[str, Any] = field(default_factory=dict)
    embedder: Embedder | None = field(default=None, repr=False)
    _installed: PromptContext | None = field(default=None, repr=False)
    _by_fact: dict[int, tuple[str, ...]] = field(default_factory=dict, repr=False)  # fact-mode retrievals
    _copies: tuple[str, ...] = field(default=(), repr=False)

    @property
    def is_applied(self) -> bool:
        return self._installed is not None

    def touches(self) -> tuple[str, ...]:
        return (PROMPT_CONTEXT_KIND,)

    def changes(self) -> list[tuple[str, str]]:
        return [(PROMPT_CONTEXT_KIND, f"{len(self.requests)} fact(s), k={self.settings.k} of {len(self.pool)} pool "
                 f"demonstrations, retrieval by {self.settings.retrieval}, embedder {self.embedder_name}")]

    def content_digest(self) -> str:
        """sha256 over what decides the contexts: requests, settings, embedder, pool texts and all embeddings."""
        digest = hashlib.sha256(json.dumps(
            [self.method, [r.to_dict() for r in self.requests], dict(self.hparams), self.embedder_name,
             list(self.pool.texts), list(self.pool.kinds)], sort_keys=True, default=str).encode())
        for tensor in (self.pool.embeddings, self.request_embeddings):
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    @property
    def settings(self) -> IKEHparams:
        return IKEHparams(**self.hparams)

    def copy_demonstrations(self) -> tuple[str, ...]:
        if not self._copies:
            template = self.settings.demonstration_template
            self._copies = tuple(render(template, r, r.text, r.target_new) for r in self.requests)
        return self._copies

    def _embedder(self) -> Embedder:
        if self.embedder is None:
            self.embedder = load_embedder(self.embedder_name)
        if self.embedder.name != self.embedder_name:
            raise KeditError(f"this IKE edit was embedded with {self.embedder_name!r}, not {self.embedder.name!r}")
        return self.embedder

    def _demonstrations(self, vector: torch.Tensor, request_index: int, k: int) -> tuple[str, ...]:
        """The k candidates nearest to ``vector``: pool rows, then the other requests' copy demonstrations."""
        others = [j for j in range(len(self.requests)) if j != request_index]
        texts = list(self.pool.texts)
        parts = [cosine_similarities(self.pool.embeddings, vector)] if len(self.pool) else []
        if others:
            copies = self.copy_demonstrations()
            texts += [copies[j] for j in others]
            parts.append(cosine_similarities(self.request_embeddings[others], vector))
        if not parts:
            return ()
        return tuple(texts[index] for index in nearest(torch.cat(parts), k))

    def retrieve(self, prompts: Sequence[str]) -> list[Retrieval]:
        """The fact and the demonstrations each prompt is shown with (identical prompts share the work)."""
        settings = self.settings
        unique = list(dict.fromkeys(prompts))
        needs_vectors = settings.retrieval == "query" or len(self.requests) > 1
        queries = _embed(self._embedder(), unique, "IKE queries") if needs_vectors and unique else None
        if queries is not None and queries.shape[1] != self.request_embeddings.shape[1]:
            raise KeditError(f"query embeddings have {queries.shape[1]} dimensions, the edit's "
                             f"{self.request_embeddings.shape[1]}: not the embedder it was built with")
        found: dict[str, Retrieval] = {}
        for row, prompt in enumerate(unique):
            index = 0
            if len(self.requests) > 1:
                # argmax returns the first maximum: ties go to the earlier request
                index = int(torch.argmax(cosine_similarities(self.request_embeddings, queries[row])))
            if settings.retrieval == "query":
                demos = self._demonstrations(queries[row], index, settings.k)
            else:
                if index not in self._by_fact:
                    self._by_fact[index] = self._demonstrations(self.request_embeddings[index], index, settings.k)
                demos = self._by_fact[index]
            found[prompt] = Retrieval(index, demos)
        return [found[prompt] for prompt in prompts]

    def contexts(self, prompts: Sequence[str]) -> list[str]:
        """The prefix of each prompt: demonstrations, then the query template with the chosen fact."""
        template = self.settings.query_template
        return [
            "".join(r.demonstrations) + template.format(fact=fact_text(self.requests[r.request_index]))
            for r in self.retrieve(prompts)
        ]

    def apply(self, lm: LoadedModel) -> None:
        if self.is_applied:
            raise EditStateError(f"this {self.method} edit is already applied")
        check_base(self, lm)
        provider = self.contexts  # one bound-method object: revert pops exactly this one
        lm.push_prompt_context(provider, self.content_digest())
        self._installed = provider

    def revert(self, lm: LoadedModel) -> None:
        if not self.is_applied:
            raise EditStateError(f"this {self.method} edit is not applied; nothing to revert")
        lm.pop_prompt_context(self._installed, self.content_digest())
        self._installed = None

    def manifest(self) -> dict[str, Any]:
        return manifest_of(self, embedder=self.embedder_name,
                           pool={"demonstrations": len(self.pool), "source": self.pool.source})

    def save(self, directory: str | Path) -> Path:
        """Write the demonstrations (JSON), the embeddings (safetensors) and ``edit.json`` with their sha256."""
        demos = {"texts": list(self.pool.texts), "kinds": list(self.pool.kinds)}
        tensors = {"pool": self.pool.embeddings.contiguous(), "requests": self.request_embeddings.contiguous()}

        def write(folder: Path) -> None:
            (folder / DEMONSTRATIONS_FILE).write_text(json.dumps(demos, ensure_ascii=False), encoding="utf-8")
            save_file(tensors, str(folder / EMBEDDINGS_FILE))

        return save_edit_files(directory, self.manifest(), write)

    @classmethod
    def load(cls, directory: str | Path, embedder: Embedder | None = None) -> IKEEdit:
        directory = Path(directory)
        manifest = read_manifest(directory, PROMPT_CONTEXT_KIND)
        check_files(directory, manifest)
        demos = json.loads((directory / DEMONSTRATIONS_FILE).read_text(encoding="utf-8"))
        tensors = load_file(str(directory / EMBEDDINGS_FILE))
        info = manifest.get("info", {})
        edit = cls(
            method=manifest["method"],
            requests=requests_of(manifest),
            hparams=manifest["hparams"],
            pool=DemonstrationPool(tuple(demos["texts"]), tuple(demos["kinds"]), tensors["pool"],
                                   manifest.get("pool", {}).get("source", "")),
            request_embeddings=tensors["requests"],
            embedder_name=manifest["embedder"],
            # edits saved before the field existed kept it in their info
            base_fingerprint=manifest.get("base_fingerprint") or info.get("base_fingerprint", ""),
            info=info,
            embedder=embedder,
        )
        if embedder is not None:
            edit._embedder()  # refuse a different embedder now rather than at the first query
        return edit

    @classmethod
    def combine(cls, edits: Sequence[IKEEdit]) -> IKEEdit:
        """One edit over every request of ``edits`` (same pool and settings): each query retrieves its fact among all."""
        check_combinable(cls, edits)
        first = edits[0]
        for other in edits[1:]:
            if dict(other.hparams) != dict(first.hparams) or other.embedder_name != first.embedder_name \
                    or other.pool.texts != first.pool.texts:
                raise KeditError("cannot combine IKE edits made with different settings, embedders or pools")
        return cls(method=first.method, requests=tuple(r for e in edits for r in e.requests), hparams=dict(first.hparams),
                   pool=first.pool, request_embeddings=torch.cat([e.request_embeddings for e in edits]),
                   embedder_name=first.embedder_name, base_fingerprint=first.base_fingerprint,
                   info={"combined": len(edits), "steps": [dict(e.info) for e in edits]},
                   embedder=next((e.embedder for e in edits if e.embedder is not None), None))


@register("ike")
class IKE:
    """The method object keeps the embedder and the embedded pools it built, for the edits that follow.

    ``embedder`` replaces the one named in the hyperparameters (tests pass a toy one);
    ``pool_cases`` give the demonstration pool from Python instead of ``pool_file``.
    """

    summary: ClassVar[str] = ("In-context editing: k retrieved demonstrations and the new fact prefix every "
                              "prompt; no weight changes (Zheng et al. 2023)")
    hparams_class: ClassVar[type] = IKEHparams
    batch_capable: ClassVar[bool] = True

    def __init__(self, embedder: Embedder | None = None, pool_cases: Sequence[Case] | None = None) -> None:
        self.embedder = embedder
        self.pool_cases = None if pool_cases is None else tuple(pool_cases)
        self._pools: dict[tuple, DemonstrationPool] = {}

    def default_hparams(
        self, lm: LoadedModel | None, user_file: str | Path | None = None, overrides: Mapping[str, Any] | None = None
    ) -> IKEHparams:
        return build_hparams(IKEHparams, lm, DEFAULTS_YAML, user_file, overrides, ALIASES)

    def _resolve_embedder(self, hparams: IKEHparams, lm: LoadedModel) -> Embedder:
        if self.embedder is None:
            self.embedder = load_embedder(hparams.embedder, lm.device)
        return self.embedder

    def _cases(self, hparams: IKEHparams) -> tuple[tuple[Case, ...], str, tuple]:
        """The pool's cases, a description of where they came from, and a key that changes with them."""
        if self.pool_cases is not None:
            if hparams.pool_file is not None:
                raise KeditError("give the IKE pool either as pool_cases or as pool_file, not both")
            return self.pool_cases, f"{len(self.pool_cases)} cases given in Python", ("python",)
        if hparams.pool_file is None:
            if hparams.k == 0:
                return (), "none (k=0)", ("none",)
            raise KeditError(f"IKE with k={hparams.k} needs training cases for its demonstrations: set "
                             "pool_file=PATH (a JSON list of cases, as kedit.requests.load_cases reads) or k=0")
        path = Path(hparams.pool_file).expanduser().resolve()
        if not path.is_file():
            raise KeditError(f"IKE pool_file {hparams.pool_file!r} does not exist")
        stat = path.stat()
        return tuple(load_cases(path)), str(path), (str(path), stat.st_mtime_ns, stat.st_size)

    def pool(self, hparams: IKEHparams, embedder: Embedder) -> DemonstrationPool:
        cases, source, key = self._cases(hparams)
        key = (*key, hparams.demonstration_template, embedder.name)
        if key not in self._pools:
            self._pools[key] = build_pool(cases, embedder, hparams.demonstration_template, source)
        pool = self._pools[key]
        if hparams.k > 0 and len(pool) == 0:
            raise KeditError(f"IKE with k={hparams.k} found no demonstrations in {source}; give training cases or k=0")
        return pool

    def compute(self, lm: LoadedModel, requests: Sequence[EditRequest], hparams: IKEHparams) -> IKEEdit:
        if not requests:
            raise KeditError("IKE needs at least one request")
        embedder = self._resolve_embedder(hparams, lm)
        pool = self.pool(hparams, embedder)
        copies = [render(hparams.demonstration_template, r, r.text, r.target_new) for r in requests]
        request_embeddings = _embed(embedder, copies, "IKE requests")
        if len(pool) and pool.embeddings.shape[1] != request_embeddings.shape[1]:
            raise KeditError("the pool and the requests were embedded with different dimensions")
        leaked = sorted(set(copies) & set(pool.texts))
        if leaked:
            warnings.warn(f"{len(leaked)} edited fact(s) are also in the IKE demonstration pool (for example "
                          f"{leaked[0]!r}): the pool should hold training cases only", KeditWarning, stacklevel=2)
        available = len(pool) + len(requests) - 1
        if hparams.k > available:
            warnings.warn(f"IKE k={hparams.k} but only {available} demonstrations can be retrieved; all are used",
                          KeditWarning, stacklevel=2)
        return IKEEdit(
            method=self.name,
            requests=tuple(requests),
            hparams=asdict(hparams),
            pool=pool,
            request_embeddings=request_embeddings,
            embedder_name=embedder.name,
            base_fingerprint=lm.fingerprint,
            info={"pool_demonstrations": len(pool), "pool_source": pool.source, "model": lm.source},
            embedder=embedder,
        )
