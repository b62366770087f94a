"""Shared fixtures: a tokenizer trained in-process and tiny random models of several architectures
(see tests/tiny_models.py), an isolated cache folder, one CPU thread, a small text corpus."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from tests.tiny_models import (
    ALL_ARCHITECTURES,
    MAIN_ARCHITECTURES,
    NUM_LAYERS,
    SENTENCES,
    build_model,
    save_tiny_folder,
    train_tokenizer,
)


@pytest.fixture(scope="session")
def kedit_home(tmp_path_factory):
    """One cache folder (statistics, templates) for the fast tests of this session."""
    return tmp_path_factory.mktemp("kedit-home")


def _is_slow(request) -> bool:
    # Tests marked slow load the real bundled model: they keep the user's cache and every core.
    return request.node.get_closest_marker("slow") is not None


@pytest.fixture(autouse=True)
def _isolated_cache(request, kedit_home, monkeypatch):
    """Caches go to the session's folder, never to ~/.cache/kedit."""
    if not _is_slow(request):
        monkeypatch.setenv("KEDIT_HOME", str(kedit_home))


@pytest.fixture(autouse=True)
def _one_thread(request):
    """The test machine's cores are shared: one intra-op thread keeps tiny-model runs predictable."""
    if _is_slow(request):
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tokenizer():
    return train_tokenizer()


@pytest.fixture
def make_lm(tokenizer) -> Callable:
    """``make_lm(architecture, seed=0)`` → a fresh :class:`kedit.models.LoadedModel`."""
    from kedit.models import prepare_model

    def make(architecture: str, seed: int = 0, num_layers: int = NUM_LAYERS):
        model = build_model(architecture, len(tokenizer), seed=seed, num_layers=num_layers)
        return prepare_model(model, tokenizer, source=f"tiny-{architecture}")

    return make


@pytest.fixture(params=MAIN_ARCHITECTURES)
def lm(request, make_lm):
    """A tiny model of each of the four main architectures."""
    return make_lm(request.param)


@pytest.fixture(params=ALL_ARCHITECTURES)
def any_lm(request, make_lm):
    """A tiny model of every architecture the tests know (the main four, GPT-J, Qwen2, Mistral)."""
    return make_lm(request.param)


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory):
    """A small text file (~3,000 tokens): paragraphs of the training sentences, re-ordered."""
    paragraphs = []
    for index in range(60):
        picked = [SENTENCES[(index * 7 + offset * 3) % len(SENTENCES)] for offset in range(1 + index % 4)]
        paragraphs.append(" ".join(picked))
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n\n".join(paragraphs), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    """A tiny random Llama saved as a Hugging Face folder, for commands that load a model by path."""
    return save_tiny_folder(tmp_path_factory.mktemp("tiny-llama"))
