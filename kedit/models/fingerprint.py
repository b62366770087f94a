"""A model fingerprint: stable across loads, different when any weight differs."""

from __future__ import annotations

import hashlib

import torch
from torch import nn


def weights_fingerprint(model: nn.Module) -> str:
    """sha256 over every parameter and buffer (name, dtype, shape and raw bytes), in name order.

    Tied parameters are counted once (``named_parameters`` de-duplicates them). Non-persistent
    buffers such as rotary caches are skipped: they are derived from the config, not learned.
    """
    digest = hashlib.sha256()
    persistent = dict(model.state_dict(keep_vars=True))
    tensors = dict(model.named_parameters())
    tensors.update({name: t for name, t in model.named_buffers() if name in persistent})
    for name in sorted(tensors):
        tensor = tensors[name].detach()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        flat = tensor.to("cpu").contiguous().reshape(-1)
        # View the bytes without conversion so bfloat16/float16 weights hash exactly.
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
