"""``load_model``: one entry point for bundled models, local HF folders, GGUF files and hub ids."""

from __future__ import annotations

import difflib
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kedit.errors import EditStateError, ModelLoadError
from kedit.models.anatomy import Anatomy, find_anatomy
from kedit.models.bundled import BUNDLED_MODELS
from kedit.models.fingerprint import weights_fingerprint
from kedit.models.gguf_cache import converted_dir
from kedit.models.routing import QueryRouter
from kedit.models.start_token import AUTO, choose_start_token, with_start_token

DEFAULT_MODEL = "smollm2-135m"
log = logging.getLogger(__name__)

# Maps the prompts of one call to the text each is prefixed with (same order, same length).
PromptContext = Callable[[Sequence[str]], list[str]]


@dataclass
class LoadedModel:
    """A model ready for editing: weights, tokenizer, where its parts are, and who it is.

    ``fingerprint`` identifies the weights as loaded (before any edit); caches and saved edits are
    keyed by it. ``model`` is in eval mode with gradients off for every parameter.

    ``prompt_contexts`` are the prefixes installed by edits that change no weight (IKE): every
    prompt that scoring and generation show the model goes through :meth:`in_context`. They form a
    stack, oldest first; each edit pushes its own and pops it on revert.

    ``start_token`` is the document-start token kedit makes the tokenizer put before every text
    (None: the tokenizer adds its own BOS, or none was asked for); see :mod:`kedit.models.start_token`.

    ``routers`` are the query routers installed by edits that answer some prompts with another
    model (SERAC's memory; :mod:`kedit.models.routing`): scoring and generation ask :meth:`route`
    which model answers each prompt. A stack like the prompt contexts, pushed and popped by edits.

    ``overlays`` are the content digests of the installed changes that are not in the weights
    (prompt contexts, query routers, routing modules), oldest first: :meth:`state_fingerprint` includes them.
    ``reuse`` holds objects built for this model and reused by later calls (method instances with
    their loaded embedders and pools: :func:`kedit.methods.method_for`); it is not part of the state.
    """

    model: nn.Module
    tokenizer: Any
    fingerprint: str
    anatomy: Anatomy
    source: str
    device: torch.device
    dtype: torch.dtype
    prompt_contexts: tuple[PromptContext, ...] = ()
    start_token: str | None = None
    overlays: tuple[str, ...] = ()
    routers: tuple[QueryRouter, ...] = ()
    reuse: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def pad_token_id(self) -> int:
        return self.tokenizer.pad_token_id

    @property
    def tokenization(self) -> str:
        """What, besides the weights, decides the token sequences the model sees (cache keys include it)."""
        return f"start={self.start_token}"

    def in_context(self, prompts: Sequence[str]) -> list[str]:
        """What the model is shown for each prompt: every installed prefix (oldest first), then the prompt."""
        shown = list(prompts)
        if not self.prompt_contexts:
            return shown
        prefixes = [provider(shown) for provider in self.prompt_contexts]
        return ["".join(parts) + prompt for *parts, prompt in zip(*prefixes, shown, strict=True)]

    def push_prompt_context(self, provider: PromptContext, digest: str) -> None:
        """Install ``provider``; ``digest`` identifies its content in :meth:`state_fingerprint`."""
        self.prompt_contexts = (*self.prompt_contexts, provider)
        self.push_overlay(digest)

    def pop_prompt_context(self, provider: PromptContext, digest: str) -> None:
        """Remove ``provider``, which must be the latest one installed (contexts are undone in reverse order)."""
        if not self.prompt_contexts or self.prompt_contexts[-1] is not provider:
            raise EditStateError("this prompt context is not the latest one installed; revert the later edits first")
        self.pop_overlay(digest)
        self.prompt_contexts = self.prompt_contexts[:-1]

    def push_router(self, router: QueryRouter, digest: str) -> None:
        """Install ``router``; ``digest`` identifies its content in :meth:`state_fingerprint`."""
        self.routers = (*self.routers, router)
        self.push_overlay(digest)

    def pop_router(self, router: QueryRouter, digest: str) -> None:
        """Remove ``router``, which must be the latest one installed (and the latest overlay)."""
        if not self.routers or self.routers[-1] is not router:
            raise EditStateError("this query router is not the latest one installed; revert the later edits first")
        self.pop_overlay(digest)
        self.routers = self.routers[:-1]

    def route(self, prompts: Sequence[str]) -> list[tuple[LoadedModel, str] | None]:
        """Per prompt, None (this model answers) or (the model that answers instead, the text it is
        shown). The newest router is asked first; a prompt it leaves alone goes to the older ones."""
        routes: list[tuple[LoadedModel, str] | None] = [None] * len(prompts)
        for router in reversed(self.routers):
            open_ = [index for index, route in enumerate(routes) if route is None]
            if not open_:
                break
            answers = router([prompts[index] for index in open_])
            if len(answers) != len(open_):
                raise ValueError(f"a query router returned {len(answers)} routes for {len(open_)} prompts")
            for index, answer in zip(open_, answers, strict=True):
                routes[index] = answer
        return routes

    def push_overlay(self, digest: str) -> None:
        """Record a change that is not in the weights (a prompt context, a routing module) by its content digest."""
        self.overlays = (*self.overlays, digest)

    def pop_overlay(self, digest: str) -> None:
        if not self.overlays or self.overlays[-1] != digest:
            raise EditStateError("this edit is not the latest one installed on the model; revert the later edits first")
        self.overlays = self.overlays[:-1]

    def state_fingerprint(self) -> str:
        """Who the model is now: the fingerprint of its current weights, combined with the digests of
        the installed overlays (in order) when there are any; equal to the weights' fingerprint otherwise."""
        weights = weights_fingerprint(self.model)
        if not self.overlays:
            return weights
        return hashlib.sha256("\n".join((weights, *self.overlays)).encode()).hexdigest()

    def module(self, path: str) -> nn.Module:
        return self.model.get_submodule(path)

    def parameter(self, name: str) -> nn.Parameter:
        return self.model.get_parameter(name)


def resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("device 'cuda' was requested but torch sees no CUDA device; use 'cpu' or 'auto'")
    return resolved


def _offline_choices() -> str:
    bundled = ", ".join(
        f"{name} ({'installed' if spec.is_installed() else 'not installed: ' + spec.install_hint})"
        for name, spec in BUNDLED_MODELS.items()
    )
    return f"bundled models: {bundled}; a local Hugging Face model folder; or a local .gguf file"


def _source_directory(name_or_path: str) -> tuple[str | Path, bool]:
    """Return (what to pass to from_pretrained, whether it is local)."""
    if name_or_path in BUNDLED_MODELS:
        bundled = BUNDLED_MODELS[name_or_path]
        return converted_dir(bundled.part_paths(), bundled.gguf_name), True
    path = Path(name_or_path).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"GGUF file {path} does not exist")
        return converted_dir([path], path.name), True
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is a folder but has no config.json: it is not a Hugging Face model folder")
        return path, True
    if path.exists() or name_or_path.startswith((".", "/", "~")):
        raise ModelLoadError(f"{name_or_path!r} is neither a model folder nor a .gguf file")
    return name_or_path, False


def _prepare_tokenizer(tokenizer: Any) -> Any:
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ModelLoadError("the tokenizer has neither a pad nor an eos token; kedit cannot pad batches")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def prepare_model(model: nn.Module, tokenizer: Any, source: str = "in-memory", start_token: str = AUTO) -> LoadedModel:
    """Wrap an already-built model (for example a tiny random one in a test) as a LoadedModel.

    ``start_token``: ``"auto"`` (prepend a document-start token when the tokenizer adds none),
    ``"none"``, or the token to prepend (:mod:`kedit.models.start_token`).
    """
    start = choose_start_token(tokenizer, start_token)
    if start is not None:
        tokenizer = with_start_token(tokenizer, start)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    first = next(model.parameters())
    return LoadedModel(
        model=model,
        tokenizer=_prepare_tokenizer(tokenizer),
        fingerprint=weights_fingerprint(model),
        anatomy=find_anatomy(model),
        source=source,
        device=first.device,
        dtype=first.dtype,
        start_token=start,
    )


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    start_token: str = AUTO,
) -> LoadedModel:
    """Load a causal LM for editing.

    ``name_or_path`` is a bundled name (``smollm2-135m``, ``gemma3-270m``), a local HF folder, a
    ``.gguf`` file (converted once to safetensors under ``$KEDIT_HOME``) or a hub id (needs the
    network; offline, the error names what can be loaded instead). ``start_token``: see
    :func:`prepare_model`.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target_device = resolve_device(device)
    source, local = _source_directory(str(name_or_path))
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, local_files_only=local)
    except OSError as error:
        if local:
            raise ModelLoadError(f"could not load the model from {source}: {error}") from error
        close = difflib.get_close_matches(str(name_or_path), list(BUNDLED_MODELS), n=1, cutoff=0.6)
        hint = f"Did you mean the bundled {close[0]!r}? " if close else ""
        raise ModelLoadError(
            f"could not load {name_or_path!r} from the Hugging Face hub ({error.__class__.__name__}: "
            f"{str(error).splitlines()[0]}). {hint}Without network access, use one of the offline choices: "
            f"{_offline_choices()}"
        ) from error
    model.to(target_device)
    return prepare_model(model, tokenizer, source=str(name_or_path), start_token=start_token)
