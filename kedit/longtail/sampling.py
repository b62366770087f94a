"""Seeded sampling of facts per bin: the paper's proportional ("natural") sampling, or stratified.

``natural`` keeps each bin's share of the population in a sample of ``n`` facts (largest-remainder
rounding, so the shares add up to ``n`` exactly); ``stratified`` takes ``n`` facts from every bin
(all of a bin that has fewer). The same items, seed and ``n`` always give the same sample, whatever
order the items came in: items are put in the order of ``identity`` before drawing.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Literal, TypeVar

from kedit.errors import DataError

T = TypeVar("T")
SamplingMode = Literal["natural", "stratified"]
SAMPLING_MODES: tuple[str, ...] = ("natural", "stratified")


def natural_quota(sizes: Sequence[int], n: int) -> list[int]:
    """Per-bin counts proportional to ``sizes`` that sum to min(n, sum(sizes)) (largest remainder)."""
    total = sum(sizes)
    n = min(n, total)
    if total == 0:
        return [0 for _ in sizes]
    exact = [size * n / total for size in sizes]
    quota = [int(share) for share in exact]
    # Hand the leftover units to the largest remainders; ties go to the lower bin (stable sort).
    order = sorted(range(len(sizes)), key=lambda i: exact[i] - quota[i], reverse=True)
    for i in order[: n - sum(quota)]:
        quota[i] += 1
    return quota


def sample_per_bin(
    items: Sequence[T],
    bin_of: Callable[[T], str],
    identity: Callable[[T], str],
    labels: Sequence[str],
    n: int,
    mode: SamplingMode,
    seed: int,
) -> list[T]:
    """A seeded sample of ``items``; ``bin_of`` names an item's bin among ``labels``.

    ``n`` is the whole sample's size for ``natural`` and the size per bin for ``stratified``.
    The result is ordered by bin (``labels`` order), then by draw.
    """
    if mode not in SAMPLING_MODES:
        raise DataError(f"sampling mode must be one of {SAMPLING_MODES}, got {mode!r}")
    if n < 0:
        raise DataError(f"sample size must be >= 0, got {n}")
    by_bin: dict[str, list[T]] = {label: [] for label in labels}
    for item in sorted(items, key=identity):
        label = bin_of(item)
        if label not in by_bin:
            raise DataError(f"item {identity(item)!r} is in bin {label!r}, not one of {list(labels)}")
        by_bin[label].append(item)
    sizes = [len(by_bin[label]) for label in labels]
    quota = natural_quota(sizes, n) if mode == "natural" else [min(n, size) for size in sizes]
    rng = random.Random(seed)
    sample: list[T] = []
    for label, take in zip(labels, quota, strict=True):
        sample.extend(rng.sample(by_bin[label], take))
    return sample
