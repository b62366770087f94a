"""One parameter's additive change, held dense or factored, and the mapping of them a weight edit holds.

Many editors write low-rank changes: ROME one outer product, MEMIT one per request, MEND one per
token of the edit input. Stored dense, a 576×1536 float32 matrix costs 3.5 MB whatever its rank;
stored as factors ΔW = U Vᵀ (U (rows, r), V (cols, r)) it costs r·(rows + cols) numbers. A
:class:`LowRankDelta` keeps the factors and forms the dense matrix only when asked — one parameter at
a time, when an edit is applied or someone reads ``edit.deltas[name]`` — and nothing keeps that
dense copy afterwards.

The dense matrix is ``(U @ Vᵀ).to(dtype)``: the product in the factors' own dtype (float64 for ROME
and MEMIT, whose updates are solved in float64; float32 for MEND), then cast to ``dtype``, the dtype
the dense delta had before kedit stored factors (the parameter's). Forming it twice from the same
factors on the same device gives the same bits, so an edit is bit-identical to itself across save
and load and across the re-applications of :class:`kedit.edits.stack.EditStack`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import torch


@dataclass(frozen=True, eq=False)  # compared as Deltas do (tensor fields have no == that gives a bool)
class LowRankDelta:
    """ΔW = U Vᵀ, in the parameter's own storage orientation (a GPT-2 Conv1D weight is stored
    (d_in, d_out), so its factors are swapped: see :meth:`transposed`).

    ``u`` (rows, r) and ``v`` (cols, r) share one dtype and device and are kept detached and
    contiguous (so a loaded copy is laid out, and multiplies, exactly like the original);
    ``dtype`` is the dtype of the dense ΔW.
    """

    u: torch.Tensor
    v: torch.Tensor
    dtype: torch.dtype

    def __post_init__(self) -> None:
        if self.u.dim() != 2 or self.v.dim() != 2 or self.u.shape[1] != self.v.shape[1]:
            raise ValueError(f"low-rank factors must be U (rows, r) and V (cols, r); got {tuple(self.u.shape)} "
                             f"and {tuple(self.v.shape)}")
        if self.u.dtype != self.v.dtype or self.u.device != self.v.device:
            raise ValueError(f"low-rank factors must share dtype and device; got {self.u.dtype} on {self.u.device} "
                             f"and {self.v.dtype} on {self.v.device}")
        object.__setattr__(self, "u", self.u.detach().contiguous())
        object.__setattr__(self, "v", self.v.detach().contiguous())

    @property
    def shape(self) -> torch.Size:
        return torch.Size((self.u.shape[0], self.v.shape[0]))

    @property
    def rank(self) -> int:
        return int(self.u.shape[1])

    @property
    def nbytes(self) -> int:
        """Bytes the factors hold."""
        return self.u.nbytes + self.v.nbytes

    def dense(self, device: torch.device | str | None = None) -> torch.Tensor:
        """The (rows, cols) matrix U Vᵀ in ``dtype``, formed on ``device`` (default: the factors')."""
        u, v = (self.u, self.v) if device is None else (self.u.to(device), self.v.to(device))
        return (u @ v.T).to(self.dtype)

    def transposed(self) -> LowRankDelta:
        """The factors of ΔWᵀ: (U Vᵀ)ᵀ = V Uᵀ. For rank one every entry is one product u_i v_j, so
        the transposed dense matrix is bit for bit the transpose of the dense one."""
        return LowRankDelta(self.v, self.u, self.dtype)

    def to(self, device: torch.device | str) -> LowRankDelta:
        return LowRankDelta(self.u.to(device), self.v.to(device), self.dtype)

    @staticmethod
    def concatenate(parts: Sequence[LowRankDelta]) -> LowRankDelta:
        """Σ_i U_i V_iᵀ = [U_1 … U_k][V_1 … V_k]ᵀ: the sum, of rank Σ r_i (the factors' columns side by side)."""
        if not parts:
            raise ValueError("nothing to concatenate")
        shapes, dtypes = {part.shape for part in parts}, {part.dtype for part in parts}
        if len(shapes) != 1 or len(dtypes) != 1:
            raise ValueError(f"low-rank deltas of different shapes or dtypes cannot be summed: {shapes}, {dtypes}")
        return LowRankDelta(torch.cat([p.u for p in parts], dim=1), torch.cat([p.v for p in parts], dim=1),
                            parts[0].dtype)


Delta = torch.Tensor | LowRankDelta  # one parameter's change as an edit holds it


def dense_nbytes(shape: Sequence[int], dtype: torch.dtype) -> int:
    count = 1
    for size in shape:
        count *= int(size)
    return count * torch.empty((), dtype=dtype).element_size()


def compact(delta: LowRankDelta) -> Delta:
    """``delta`` itself when its factors take fewer bytes than the dense matrix, else the dense matrix
    (a rank-r update of a (rows, cols) matrix is worth factoring while r·(rows + cols) < rows·cols,
    counting each side's element size)."""
    if delta.nbytes < dense_nbytes(delta.shape, delta.dtype):
        return delta
    return delta.dense()


def as_dense(delta: Delta, device: torch.device | str | None = None) -> torch.Tensor:
    """The dense tensor of ``delta`` (a dense one is returned as it is, moved to ``device`` if given)."""
    if isinstance(delta, LowRankDelta):
        return delta.dense(device)
    return delta if device is None else delta.to(device)


class Deltas(Mapping[str, torch.Tensor]):
    """An edit's changes, ``{parameter name: dense tensor}`` to every reader; factored entries are
    formed on each read and not kept. :meth:`form` gives what is stored (a tensor or a
    :class:`LowRankDelta`), :attr:`nbytes` what that costs."""

    def __init__(self, forms: Mapping[str, Delta]) -> None:
        for name, form in forms.items():
            if not isinstance(form, torch.Tensor | LowRankDelta):
                raise TypeError(f"the delta of {name} is a {type(form).__name__}, not a tensor or a LowRankDelta")
        self._forms: dict[str, Delta] = dict(forms)

    def __getitem__(self, name: str) -> torch.Tensor:
        return as_dense(self._forms[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self._forms)

    def __len__(self) -> int:
        return len(self._forms)

    def __repr__(self) -> str:
        parts = [f"{name}: {'×'.join(map(str, self.shape(name)))}"
                 + (f" rank {form.rank}" if isinstance(form, LowRankDelta) else "")
                 for name, form in self._forms.items()]
        return f"Deltas({', '.join(parts)})"

    def __eq__(self, other: object) -> bool:
        """Same names holding the same stored forms (compared as stored, nothing formed dense)."""
        if not isinstance(other, Deltas):
            return NotImplemented
        return self._forms.keys() == other._forms.keys() and all(
            _same_form(form, other._forms[name]) for name, form in self._forms.items())

    __hash__ = None  # mutable tensors inside

    def form(self, name: str) -> Delta:
        """What is stored for ``name``: a dense tensor or a :class:`LowRankDelta`."""
        return self._forms[name]

    @property
    def forms(self) -> Mapping[str, Delta]:
        return MappingProxyType(self._forms)

    def shape(self, name: str) -> torch.Size:
        return self._forms[name].shape

    def dense_on(self, name: str, device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
        """The dense change of ``name`` on ``device`` in ``dtype`` (what is added to the parameter)."""
        form = self._forms[name]
        if isinstance(form, LowRankDelta):
            return form.dense(device).to(dtype)
        return form.to(device=device, dtype=dtype)

    @property
    def nbytes(self) -> int:
        """Bytes the stored forms hold (factors, not the dense matrices they stand for)."""
        return sum(form.nbytes for form in self._forms.values())


def _same_form(first: Delta, second: Delta) -> bool:
    if first is second:
        return True
    if isinstance(first, LowRankDelta) and isinstance(second, LowRankDelta):
        return first.dtype == second.dtype and _equal(first.u, second.u) and _equal(first.v, second.v)
    return isinstance(first, torch.Tensor) and isinstance(second, torch.Tensor) and _equal(first, second)


def _equal(first: torch.Tensor, second: torch.Tensor) -> bool:
    return first.shape == second.shape and first.dtype == second.dtype and first.device == second.device \
        and torch.equal(first, second)
