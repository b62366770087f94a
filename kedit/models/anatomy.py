"""Where the parts of a causal LM are, found by inspecting its module tree.

Locate-then-edit methods need four things: the list of transformer blocks, each block's MLP
output projection (the "down" matrix whose input is the MLP key k and whose output is the value
written to the residual stream), the final norm and the unembedding. They are found structurally,
never by matching the model's name:

* blocks: the longest ``nn.ModuleList`` whose every element has an MLP child;
* MLP output projection: the linear leaf of that MLP whose output width is the model width and
  whose input width is not (Llama ``down_proj``, GPT-2 ``c_proj``, GPT-J ``fc_out``, NeoX
  ``dense_4h_to_h`` all qualify);
* final norm: the normalisation child of the module that owns the block list;
* unembedding: ``model.get_output_embeddings()``;
* a norm between the MLP output and the residual stream, where a block has one
  (``post_feedforward_layernorm``: Gemma-2/3, OLMo-2): the MLP output projection's output is then
  not the residual increment, which MEMIT's layer spread must take into account.

GPT-2's ``Conv1D`` stores its weight as (d_in, d_out) and computes ``x @ W``; every other layout
stores (d_out, d_in). :attr:`Anatomy.transposed` records which, so updates written as
``dW (d_out x d_in)`` can be stored in the parameter's own orientation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from kedit.errors import AnatomyError

MLP_CHILD_NAMES = ("mlp", "feed_forward", "ffn")
POST_MLP_NORM_NAMES = ("post_feedforward_layernorm",)


@dataclass(frozen=True)
class Anatomy:
    """Module paths (as in ``model.named_modules()``) and widths of one model."""

    block_paths: tuple[str, ...]
    mlp_out_paths: tuple[str, ...]
    final_norm_path: str
    unembed_path: str
    hidden_size: int
    key_size: int  # input width of the MLP output projection (d_k)
    transposed: bool  # True for GPT-2 style Conv1D weights stored as (d_in, d_out)
    # per block: the norm applied to the MLP output before it joins the residual (None: none)
    post_mlp_norm_paths: tuple[str | None, ...] = ()

    @property
    def num_layers(self) -> int:
        return len(self.block_paths)

    def mlp_out_weight(self, layer: int) -> str:
        """Parameter name of layer ``layer``'s MLP output weight."""
        self.check_layer(layer)
        return f"{self.mlp_out_paths[layer]}.weight"

    def check_layer(self, layer: int) -> None:
        if not isinstance(layer, int) or not 0 <= layer < self.num_layers:
            raise AnatomyError(f"layer {layer!r} is out of range: this model has layers 0..{self.num_layers - 1}")

    def as_update(self, delta_out_in: torch.Tensor) -> torch.Tensor:
        """Turn a (d_out, d_in) update into the parameter's storage orientation."""
        return delta_out_in.T.contiguous() if self.transposed else delta_out_in

    def as_out_in(self, weight: torch.Tensor) -> torch.Tensor:
        """View a stored MLP output weight as (d_out, d_in)."""
        return weight.T if self.transposed else weight


def _linear_widths(module: nn.Module) -> tuple[int, int] | None:
    """(in, out) widths of a linear-like leaf, or None. Conv1D is recognised by its ``nf`` field."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        return None
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if hasattr(module, "nf") and weight.shape[1] == module.nf:  # transformers' Conv1D
        return weight.shape[0], weight.shape[1]
    if isinstance(module, nn.Embedding):
        return None
    return weight.shape[1], weight.shape[0]


def _is_conv1d(module: nn.Module) -> bool:
    return hasattr(module, "nf") and not isinstance(module, nn.Linear)


def text_config(model: nn.Module):
    """The model's config, or its ``text_config`` for families that nest one (Gemma-3, multimodal)."""
    config = getattr(model, "config", None)
    return getattr(config, "text_config", None) or config


def _hidden_size(model: nn.Module) -> int:
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if embeddings is not None and hasattr(embeddings, "weight"):
        return int(embeddings.weight.shape[1])
    config = text_config(model)
    for key in ("hidden_size", "n_embd", "d_model"):
        if config is not None and getattr(config, key, None):
            return int(getattr(config, key))
    raise AnatomyError("cannot tell the model width: no input embeddings and no hidden_size in the config")


def _mlp_child(block: nn.Module) -> nn.Module | None:
    for name in MLP_CHILD_NAMES:
        child = getattr(block, name, None)
        if isinstance(child, nn.Module):
            return child
    return None


def _describe_tree(model: nn.Module, depth: int = 3, limit: int = 40) -> str:
    lines = []
    for name, module in model.named_modules():
        if name and name.count(".") < depth:
            lines.append(f"  {name}: {type(module).__name__}")
        if len(lines) >= limit:
            lines.append("  ...")
            break
    return "\n".join(lines)


def find_anatomy(model: nn.Module) -> Anatomy:
    """Inspect ``model`` and return its :class:`Anatomy`, or raise :class:`AnatomyError`."""
    modules = dict(model.named_modules())
    hidden = _hidden_size(model)

    candidates = [
        (name, module)
        for name, module in modules.items()
        if isinstance(module, nn.ModuleList) and len(module) > 0
        and all(_mlp_child(block) is not None for block in module)
    ]
    if not candidates:
        raise AnatomyError(
            "no list of transformer blocks with an MLP child (mlp / feed_forward / ffn) was found. "
            f"Modules seen:\n{_describe_tree(model)}"
        )
    blocks_path, blocks = max(candidates, key=lambda item: len(item[1]))

    mlp_out_paths, key_sizes, transposed_flags = [], [], []
    for index, block in enumerate(blocks):
        mlp = _mlp_child(block)
        mlp_name = next(name for name in MLP_CHILD_NAMES if getattr(block, name, None) is mlp)
        outs = []
        for leaf_name, leaf in mlp.named_modules():
            widths = _linear_widths(leaf) if leaf_name else None
            if widths and widths[1] == hidden and widths[0] != hidden:
                outs.append((leaf_name, leaf, widths))
        if not outs:
            raise AnatomyError(
                f"block {index} ({blocks_path}.{index}.{mlp_name}) has no linear layer mapping a wider "
                f"input to the model width {hidden}; its children: "
                + ", ".join(f"{n}: {type(m).__name__}" for n, m in mlp.named_children())
            )
        leaf_name, leaf, widths = outs[-1]  # the last registered one is the output projection
        mlp_out_paths.append(f"{blocks_path}.{index}.{mlp_name}.{leaf_name}")
        key_sizes.append(widths[0])
        transposed_flags.append(_is_conv1d(leaf))
    if len(set(key_sizes)) != 1 or len(set(transposed_flags)) != 1:
        raise AnatomyError(f"MLP output projections differ between blocks: widths {sorted(set(key_sizes))}")

    owner_path = blocks_path.rsplit(".", 1)[0] if "." in blocks_path else ""
    owner = modules[owner_path]
    norms = [
        name for name, child in owner.named_children()
        if "norm" in type(child).__name__.lower() or "layernorm" in name.lower().replace("_", "")
    ]
    if len(norms) != 1:
        raise AnatomyError(
            f"expected one final norm beside {blocks_path}, found {norms or 'none'}. "
            f"Modules seen:\n{_describe_tree(model)}"
        )
    final_norm_path = f"{owner_path}.{norms[0]}" if owner_path else norms[0]

    unembed = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    unembed_path = next((name for name, module in modules.items() if module is unembed), None)
    if unembed is None or unembed_path is None:
        raise AnatomyError("the model has no output embeddings (get_output_embeddings() returned None)")

    post_mlp_norms = tuple(
        next((f"{blocks_path}.{index}.{name}" for name in POST_MLP_NORM_NAMES
              if isinstance(getattr(block, name, None), nn.Module)), None)
        for index, block in enumerate(blocks)
    )
    return Anatomy(
        post_mlp_norm_paths=post_mlp_norms,
        block_paths=tuple(f"{blocks_path}.{index}" for index in range(len(blocks))),
        mlp_out_paths=tuple(mlp_out_paths),
        final_norm_path=final_norm_path,
        unembed_path=unembed_path,
        hidden_size=hidden,
        key_size=key_sizes[0],
        transposed=transposed_flags[0],
    )
