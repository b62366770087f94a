"""The paper's embedding linker (Yi et al. 2025, after Liu et al. 2021's SapBERT), for users online.

Every entity name and synonym, and every mention the other linkers left, is embedded by an encoder
(default ``cambridgeltl/SapBERT-from-PubMedBERT-fulltext``): the ``[CLS]`` vector of the last layer,
inputs cut at 32 tokens, L2-normalised. A mention links to the entities of its nearest name (inner
product = cosine) when the cosine exceeds the threshold (the paper: 0.85). Any Hugging Face encoder
folder or hub id works; offline, a model already on disk does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from kedit.errors import ModelLoadError
from kedit.longtail.triples import Entity

MAX_TOKENS = 32
BATCH = 128


class EmbeddingLinker:
    """Nearest-name linking by cosine similarity of encoder embeddings."""

    def __init__(self, model: Any, tokenizer: Any, entities: Iterable[Entity], threshold: float) -> None:
        import torch

        self._model = model.eval()
        self._tokenizer = tokenizer
        self._threshold = threshold
        names: list[str] = []
        owners: list[str] = []
        for entity in entities:
            for name in dict.fromkeys((entity.name, *entity.synonyms)):
                names.append(name)
                owners.append(entity.id)
        self._owners = owners
        with torch.no_grad():
            self._names = self.embed(names)  # (names, hidden), unit rows

    @classmethod
    def from_pretrained(cls, entities: Iterable[Entity], model_name: str, threshold: float) -> EmbeddingLinker:
        try:
            from transformers import AutoModel, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(model_name)
            model = AutoModel.from_pretrained(model_name)
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"--link sapbert: cannot load encoder {model_name!r} ({error}); it needs the "
                                 "model on disk or a connection to the Hugging Face hub") from None
        return cls(model, tokenizer, entities, threshold)

    def embed(self, texts: Sequence[str]) -> Any:
        """L2-normalised [CLS] vectors, (len(texts), hidden)."""
        import torch

        rows = []
        for start in range(0, len(texts), BATCH):
            batch = self._tokenizer(list(texts[start:start + BATCH]), padding=True, truncation=True,
                                    max_length=MAX_TOKENS, return_tensors="pt")
            with torch.no_grad():
                hidden = self._model(**batch).last_hidden_state[:, 0]  # (batch, hidden)
            rows.append(torch.nn.functional.normalize(hidden.float(), dim=-1))
        if not rows:
            return torch.zeros(0, 1)
        return torch.cat(rows)

    def match(self, texts: Sequence[str]) -> list[tuple[str, ...]]:
        """Per text the entity (as a 1-tuple) of its nearest name above the threshold, else ``()``."""
        if not texts or not self._owners:
            return [() for _ in texts]
        similarity = self.embed(texts) @ self._names.T  # (texts, names)
        best, index = similarity.max(dim=-1)
        return [(self._owners[int(i)],) if float(score) > self._threshold else ()
                for score, i in zip(best, index, strict=True)]
