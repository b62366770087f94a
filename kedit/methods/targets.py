"""Target tokens as training labels: the padded inputs and the labels a loss reads, for FT and MEND.

Prompt and target are tokenised by :func:`kedit.models.scoring.encode_pair`, the same tokens the
evaluation scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from kedit.models.batching import Batch, pad_left
from kedit.models.loading import LoadedModel
from kedit.models.scoring import encode_pair


@dataclass(frozen=True)
class TargetBatch:
    """Rows fed together and the labels the loss reads.

    ``labels``/``mask`` are (n, W), W = the longest target, right-aligned per row. Teacher forced
    (the default), each row is prompt + target minus its last token and the last ``window`` = W
    columns predict the labels; read at the last prompt token (FT-L), each row is the prompt alone
    and all W labels are read from its last column (``window`` 1).
    """

    batch: Batch
    labels: torch.Tensor  # (n, W) long, 0 where masked
    mask: torch.Tensor  # (n, W) bool
    window: int  # number of trailing columns whose logits the loss reads


def target_batch(lm: LoadedModel, pairs: Sequence[tuple[str, str]], *, at_last_prompt_token: bool = False) -> TargetBatch:
    """``(prompt, target)`` pairs as one left-padded :class:`TargetBatch` on the model's device."""
    encoded = [encode_pair(lm.tokenizer, prompt, target) for prompt, target in pairs]
    width = max(len(target) for _, target in encoded)
    labels = torch.zeros((len(encoded), width), dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.bool)
    for row, (_, target) in enumerate(encoded):
        labels[row, width - len(target):] = torch.tensor(target)
        mask[row, width - len(target):] = True
    if at_last_prompt_token:
        inputs, window = [prompt for prompt, _ in encoded], 1
    else:
        inputs, window = [prompt + target[:-1] for prompt, target in encoded], width
    return TargetBatch(pad_left(inputs, lm.pad_token_id, lm.device), labels.to(lm.device), mask.to(lm.device), window)
