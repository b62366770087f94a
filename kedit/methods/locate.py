"""Shared math of locate-then-edit methods: where the subject is, what the key is, what value to write.

* :func:`subject_token_index` — the token of a prompt that carries the subject (ROME's
  ``fact_token`` modes), found from the tokenizer's character offsets, so multi-token subjects
  and subjects anywhere in the prompt are handled and no separate-tokenisation mismatch arises.
* :func:`context_templates` — ROME's prefixes sampled from the model itself (cached per model).
* :func:`mlp_keys` — inputs of a layer's MLP output projection at chosen tokens.
* :func:`optimize_target_value` — the v* (ROME) / z (MEMIT) optimisation: a vector ``delta``
  added to a module's output at the subject token, trained so the model predicts the new target
  while keeping the subject's "essence" distribution (KL) and a small norm.
"""

from __future__ import annotations

import contextlib
import json
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from kedit.errors import RequestError
from kedit.evaluate.generation import generate_ids
from kedit.evaluate.scoring import encode_pair
from kedit.models.batching import encode, pad_left
from kedit.models.loading import LoadedModel
from kedit.models.tracing import (
    capture_inputs,
    edit_output,
    final_hidden,
    logits_from_hidden,
    replay_blocks_below,
    run_until,
)
from kedit.paths import cache_dir, sha256_text, write_json_atomic
from kedit.requests import SUBJECT_SLOT, EditRequest

FACT_TOKEN_MODES = ("subject_last", "subject_first", "subject_first_after_last", "last")
ESSENCE_TEMPLATE = "{} is a"


# --------------------------------------------------------------------------- subject token lookup


def subject_token_index(tokenizer, template: str, subject: str, mode: str = "subject_last") -> int:
    """Index (in ``encode(tokenizer, filled)``) of the token ``mode`` picks.

    ``template`` holds one ``{}``; the subject's character span in the filled text is mapped to
    tokens through the tokenizer's offsets: ``subject_last`` is the last token overlapping the
    span, ``subject_first`` the first, ``subject_first_after_last`` the token after the subject
    (the last token when the subject ends the prompt), ``last`` the prompt's last token.
    """
    if mode not in FACT_TOKEN_MODES:
        raise ValueError(f"fact_token {mode!r} is not one of {FACT_TOKEN_MODES}")
    if template.count(SUBJECT_SLOT) != 1:
        raise RequestError(f"template must contain exactly one '{{}}': {template!r}")
    start = template.index(SUBJECT_SLOT)
    text = template.replace(SUBJECT_SLOT, subject)
    end = start + len(subject)
    encoded = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    if mode == "last":
        return len(ids) - 1
    overlapping = [i for i, (a, b) in enumerate(offsets) if b > a and a < end and b > start]
    if not overlapping:
        raise RequestError(f"subject {subject!r} maps to no token of {text!r}")
    if mode == "subject_first":
        return overlapping[0]
    if mode == "subject_last":
        return overlapping[-1]
    return min(overlapping[-1] + 1, len(ids) - 1)


# --------------------------------------------------------------------------- context templates


# ROME samples its templates after GPT-2's <|endoftext|>. After a document-start token SmolLM2
# emits symbol noise ("-_m_.", ",-1."), so kedit starts each sample from one of MEMIT's seed
# words instead (cycled). Gemma-3 then writes natural prefixes ("Because it is an important");
# SmolLM2's remain rough ("The-the-key", "You, for example,") but are varied text, which is what
# the templates are for: a key that holds whatever precedes the subject.
TEMPLATE_SEEDS = ("The", "Therefore", "Because", "I", "You")


def _clean_template_text(text: str) -> str:
    # Braces are replaced because a template is later filled with str.replace on "{}": a stray
    # brace in generated text would break that (ROME leaves them in; we do not).
    text = unicodedata.normalize("NFKD", text).replace("\n\n", " ").replace("\n", " ")
    return text.replace("{", " ").replace("}", " ").strip()


def context_templates(
    lm: LoadedModel, length_params: Sequence[Sequence[int]] = ((5, 10), (10, 10)), seed: int = 0
) -> list[str]:
    """``["{}"]`` plus, for each (length, count), ``count`` sampled prefixes of ``length`` tokens.

    Lengths count the seed word, as ROME counts its start token (a length-5 template has 4
    generated tokens). The templates are sampled once per (model fingerprint, lengths, seed) and
    cached on disk.
    """
    spec = json.dumps({"lengths": [list(p) for p in length_params], "seed": seed, "seeds": TEMPLATE_SEEDS})
    path = cache_dir("templates") / f"{lm.fingerprint[:24]}-{sha256_text(spec)[:16]}.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())["templates"]
        except (json.JSONDecodeError, KeyError):
            pass
    templates = [SUBJECT_SLOT]
    for group, (length, count) in enumerate(length_params):
        seeds = [TEMPLATE_SEEDS[i % len(TEMPLATE_SEEDS)] for i in range(count)]
        ids = generate_ids(lm, [encode(lm.tokenizer, word) for word in seeds],
                           max_new_tokens=max(1, length - 1), seed=seed + group)
        for word, new in zip(seeds, ids, strict=True):
            text = _clean_template_text(word + lm.tokenizer.decode(new, skip_special_tokens=True))
            templates.append(f"{text}. {SUBJECT_SLOT}")
    write_json_atomic(path, {"spec": json.loads(spec), "templates": templates})
    return templates


# --------------------------------------------------------------------------- keys


@torch.no_grad()
def mlp_keys(lm: LoadedModel, layer: int, texts: Sequence[str], token_indices: Sequence[int]) -> torch.Tensor:
    """(n, d_k) inputs of layer ``layer``'s MLP output projection at one token of each text."""
    batch = pad_left([encode(lm.tokenizer, t) for t in texts], lm.pad_token_id, lm.device)
    path = lm.anatomy.mlp_out_paths[layer]
    module = lm.module(path)
    with capture_inputs({path: module}) as seen:
        run_until(lm, batch, module)
    inputs = seen[path]
    rows = torch.arange(len(texts))
    cols = torch.tensor([batch.column(row, index) for row, index in enumerate(token_indices)])
    return inputs[rows, cols].detach().to(torch.float32)


def filled_templates(request: EditRequest, templates: Sequence[str]) -> list[tuple[str, str]]:
    """For each context template: (template holding the request prompt with its subject slot, full text)."""
    pairs = []
    for template in templates:
        prompt_template = template.replace(SUBJECT_SLOT, request.prompt, 1)
        pairs.append((prompt_template, prompt_template.replace(SUBJECT_SLOT, request.subject, 1)))
    return pairs


def request_keys(
    lm: LoadedModel, request: EditRequest, layer: int, templates: Sequence[str], fact_token: str
) -> torch.Tensor:
    """(n_templates, d_k) keys of ``request``'s subject in each context template."""
    pairs = filled_templates(request, templates)
    texts = [text for _, text in pairs]
    indices = [subject_token_index(lm.tokenizer, prompt_template, request.subject, fact_token)
               for prompt_template, _ in pairs]
    return mlp_keys(lm, layer, texts, indices)


# --------------------------------------------------------------------------- target value


@dataclass(frozen=True)
class ValueOptimization:
    """Settings of the v* / z optimisation (ROME D.5, MEMIT D.8)."""

    steps: int = 20
    lr: float = 0.5
    weight_decay: float = 0.5
    clamp_norm_factor: float = 4.0
    kl_factor: float = 0.0625
    early_stop_loss: float = 0.05
    fact_token: str = "subject_last"
    cache_lower_blocks: bool = True
    cache_prefix: bool = True


@dataclass(frozen=True)
class TargetValue:
    """Result of the optimisation: v* = v_init + delta at the edited module's output."""

    v_init: torch.Tensor  # (d,) module output at the subject token of the bare prompt
    delta: torch.Tensor  # (d,)
    losses: tuple[float, ...] = field(default=())

    @property
    def value(self) -> torch.Tensor:
        return self.v_init + self.delta


def _add_at(output, rows: torch.Tensor, cols: torch.Tensor, delta: torch.Tensor, keep: dict):
    """Add ``delta`` to ``output`` (tensor or tuple whose first item is the hidden state) at (rows, cols)."""
    hidden = output[0] if isinstance(output, tuple) else output
    if "v_init" not in keep:
        keep["v_init"] = hidden[rows[0], cols[0]].detach().clone()
    mask = torch.zeros(hidden.shape[:2] + (1,), dtype=hidden.dtype, device=hidden.device)
    mask[rows, cols] = 1.0
    changed = hidden + mask * delta
    return (changed, *output[1:]) if isinstance(output, tuple) else changed


@dataclass
class _StepInputs:
    """What one optimisation step feeds the model and where it reads the results.

    ``target_cols`` is (n_rewrite, n_target): the output columns predicting the target tokens.
    ``restore`` puts the prefix cache back before a forward (a no-op without one).
    """

    kwargs: dict
    subject_cols: torch.Tensor  # (B,)
    target_cols: torch.Tensor  # (n_rewrite, n_target)
    restore: Callable[[], None]


def _full_inputs(lm: LoadedModel, sequences: list[list[int]], subjects: list[int], n_target: int,
                 n_rewrite: int) -> _StepInputs:
    batch = pad_left(sequences, lm.pad_token_id, lm.device)
    cols = torch.tensor([batch.column(r, p) for r, p in enumerate(subjects)], device=lm.device)
    target_cols = torch.arange(batch.width - n_target, batch.width, device=lm.device).expand(n_rewrite, -1)
    return _StepInputs(batch.model_inputs(), cols, target_cols, lambda: None)


def _prefix_cached_inputs(lm: LoadedModel, sequences: list[list[int]], subjects: list[int], n_target: int,
                          n_rewrite: int) -> _StepInputs | None:
    """Inputs that recompute only the tokens from the subject on; earlier tokens come from a KV cache.

    Tokens before the subject token are not affected by a change at the subject token, at any
    layer, so their keys and values are computed once. Row r is laid out as
    ``[left pad | prefix (p_r) | suffix (q_r) | right pad]`` with every prefix ending at column P:
    the subject token is then column 0 of every row's suffix. Returns None when no row has a
    prefix or the model's cache does not expose its layers.
    """
    prefix_width = max(subjects)
    suffix_width = max(len(seq) - p for seq, p in zip(sequences, subjects, strict=True))
    if prefix_width == 0:
        return None
    rows = len(sequences)
    width = prefix_width + suffix_width
    input_ids = torch.full((rows, width), lm.pad_token_id, dtype=torch.long)
    attention = torch.zeros((rows, width), dtype=torch.long)
    positions = torch.zeros((rows, width), dtype=torch.long)
    suffix_lengths = []
    for row, (sequence, p) in enumerate(zip(sequences, subjects, strict=True)):
        q = len(sequence) - p
        suffix_lengths.append(q)
        span = slice(prefix_width - p, prefix_width + q)
        input_ids[row, span] = torch.tensor(sequence)
        attention[row, span] = 1
        positions[row, span] = torch.arange(len(sequence))
        positions[row, prefix_width + q :] = len(sequence)  # right padding: never attended to
    input_ids, attention, positions = (t.to(lm.device) for t in (input_ids, attention, positions))
    with torch.no_grad():
        output = lm.model.base_model(input_ids=input_ids[:, :prefix_width], attention_mask=attention[:, :prefix_width],
                                     position_ids=positions[:, :prefix_width], use_cache=True)
    cache = getattr(output, "past_key_values", None)
    layers = getattr(cache, "layers", None)
    if not layers:
        return None
    snapshot = [dict(vars(layer)) for layer in layers]

    def restore() -> None:
        for layer, saved in zip(layers, snapshot, strict=True):
            vars(layer).clear()
            vars(layer).update(saved)

    target_cols = torch.stack([
        torch.arange(q - n_target, q, device=lm.device) for q in suffix_lengths[:n_rewrite]
    ])
    kwargs = {
        "input_ids": input_ids[:, prefix_width:],
        "attention_mask": attention,
        "position_ids": positions[:, prefix_width:],
        "past_key_values": cache,
        "use_cache": True,
    }
    return _StepInputs(kwargs, torch.zeros(rows, dtype=torch.long, device=lm.device), target_cols, restore)


def optimize_target_value(
    lm: LoadedModel,
    request: EditRequest,
    module_path: str,
    layer: int,
    templates: Sequence[str],
    settings: ValueOptimization,
) -> TargetValue:
    """Find ``delta`` such that adding it to ``module_path``'s output at the subject token makes the
    model predict ``request.target_new`` after every context template (ROME D.5 / MEMIT D.8).

    ``layer`` is the block that contains (ROME: the MLP output projection) or is (MEMIT: the block
    output) ``module_path``. Two savings leave the result unchanged: tokens before the subject come
    from a KV cache (``settings.cache_prefix``), and blocks strictly below ``layer`` are replayed
    from their first outputs (``settings.cache_lower_blocks``). Row 0 must be the bare template
    ``"{}"``: v_init is read there.
    """
    if templates[0] != SUBJECT_SLOT:
        raise ValueError("the first context template must be the bare '{}'")
    tokenizer = lm.tokenizer
    _, target_ids = encode_pair(tokenizer, request.text, request.target_new)
    n_target = len(target_ids)

    sequences, subjects = [], []
    for prompt_template, text in filled_templates(request, templates):
        sequences.append(encode(tokenizer, text) + target_ids[:-1])
        subjects.append(subject_token_index(tokenizer, prompt_template, request.subject, settings.fact_token))
    sequences.append(encode(tokenizer, ESSENCE_TEMPLATE.replace(SUBJECT_SLOT, request.subject)))
    subjects.append(subject_token_index(tokenizer, ESSENCE_TEMPLATE, request.subject, settings.fact_token))
    n_rewrite = len(templates)

    step = _prefix_cached_inputs(lm, sequences, subjects, n_target, n_rewrite) if settings.cache_prefix else None
    if step is None:
        step = _full_inputs(lm, sequences, subjects, n_target, n_rewrite)
    rows = torch.arange(len(sequences), device=lm.device)
    target = torch.tensor(target_ids, device=lm.device)

    delta = torch.zeros(lm.anatomy.hidden_size, device=lm.device, dtype=torch.float32, requires_grad=True)
    optimizer = torch.optim.Adam([delta], lr=settings.lr)
    keep: dict[str, torch.Tensor] = {}
    losses: list[float] = []
    kl_init = None

    def forward() -> torch.Tensor:
        step.restore()
        return final_hidden(lm, step.kwargs)

    replay = replay_blocks_below(lm, layer, step.kwargs, before=step.restore) if settings.cache_lower_blocks \
        else contextlib.nullcontext()
    edit = edit_output(lm.module(module_path), lambda out: _add_at(out, rows, step.subject_cols, delta.to(lm.dtype), keep))
    with replay, edit, torch.enable_grad():
        for index in range(settings.steps):
            optimizer.zero_grad()
            hidden = forward()  # (B, T, d)
            rewrite_hidden = hidden[rows[:n_rewrite, None], step.target_cols]  # (n_rewrite, n_target, d)
            log_probs = torch.log_softmax(logits_from_hidden(lm, rewrite_hidden).float(), dim=-1)
            nll = -log_probs.gather(2, target.expand(n_rewrite, -1)[..., None])[..., 0].mean(dim=1).mean()
            essence_hidden = hidden[n_rewrite, step.subject_cols[n_rewrite]][None]
            essence_log_probs = torch.log_softmax(logits_from_hidden(lm, essence_hidden).float(), dim=-1)
            if kl_init is None:
                kl_init = essence_log_probs.detach().clone()
            # KL(p_current || p_initial) of the essence prompt's next-token distribution.
            kl = settings.kl_factor * torch.sum(essence_log_probs.exp() * (essence_log_probs - kl_init))
            v_init = keep["v_init"].float()
            decay = settings.weight_decay * delta.norm() / v_init.norm() ** 2
            loss = nll + kl + decay
            losses.append(float(loss.detach()))
            if losses[-1] < settings.early_stop_loss or index == settings.steps - 1:
                break
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                limit = settings.clamp_norm_factor * v_init.norm()
                if delta.norm() > limit:
                    delta.mul_(limit / delta.norm())
    step.restore()
    return TargetValue(v_init=keep["v_init"].float(), delta=delta.detach().clone(), losses=tuple(losses))
