"""Turning token sequences into left-padded batches that give the same logits as unpadded ones.

Left padding puts every sequence's last token in the last column, so "the next-token distribution
after the prompt" is always ``logits[:, -1]`` and targets sit at the tail. Position ids are passed
explicitly (counted from each row's first real token): without them rotary models would see the
padding as text and shift every position.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor  # (B, T) long, left-padded
    attention_mask: torch.Tensor  # (B, T) long, 0 on padding
    position_ids: torch.Tensor  # (B, T) long, 0 at each row's first real token
    lengths: tuple[int, ...]  # real length of each row

    @property
    def width(self) -> int:
        return int(self.input_ids.shape[1])

    def column(self, row: int, index_in_sequence: int) -> int:
        """Column in the padded batch of token ``index_in_sequence`` (may be negative) of ``row``."""
        length = self.lengths[row]
        if index_in_sequence < 0:
            index_in_sequence += length
        if not 0 <= index_in_sequence < length:
            raise IndexError(f"token {index_in_sequence} is outside row {row} of length {length}")
        return self.width - length + index_in_sequence

    def model_inputs(self) -> dict[str, torch.Tensor]:
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "position_ids": self.position_ids,
        }


def pad_left(sequences: Sequence[Sequence[int]], pad_id: int, device: torch.device | str = "cpu") -> Batch:
    if not sequences:
        raise ValueError("cannot build a batch from no sequences")
    lengths = tuple(len(sequence) for sequence in sequences)
    if min(lengths) == 0:
        raise ValueError("cannot batch an empty token sequence")
    width = max(lengths)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    position_ids = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        start = width - len(sequence)
        input_ids[row, start:] = torch.tensor(list(sequence), dtype=torch.long)
        attention_mask[row, start:] = 1
        position_ids[row, start:] = torch.arange(len(sequence))
    return Batch(input_ids.to(device), attention_mask.to(device), position_ids.to(device), lengths)


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` as the model sees a prompt (with BOS where the tokenizer adds one)."""
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


def encode_batch(tokenizer, texts: Sequence[str], device: torch.device | str = "cpu") -> Batch:
    return pad_left([encode(tokenizer, text) for text in texts], tokenizer.pad_token_id, device)
