"""Shared math of locate-then-edit methods: where the subject is, what the key is, what value to write.

* :func:`subject_token_index` — the token of a prompt that carries the subject (ROME's
  ``fact_token`` modes), found from the tokenizer's character offsets, so multi-token subjects
  and subjects anywhere in the prompt are handled and no separate-tokenisation mismatch arises.
* :func:`context_templates` — ROME's prefixes sampled from the model itself (cached per model).
* :func:`mlp_keys` — inputs of a layer's MLP output projection at chosen tokens;
  :func:`weighted_subject_keys` / :func:`subject_hidden` — MEMIT's template-weighted keys and the
  residual stream at the subject token, for many requests in a few batched forwards.
* :func:`optimize_target_values` — the v* (ROME) / z (MEMIT) optimisation: a vector ``delta``
  added to a module's output at the subject token, trained so the model predicts the new target
  while keeping the subject's "essence" distribution (KL) and a small norm; many requests are
  optimised together, each exactly as it would be alone (:func:`optimize_target_value`: one).
"""

from __future__ import annotations

import contextlib
import json
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from kedit.errors import RequestError
from kedit.models.anatomy import text_config
from kedit.models.batching import encode, pad_left
from kedit.models.generation import generate_ids
from kedit.models.loading import LoadedModel
from kedit.models.scoring import encode_pair
from kedit.models.tracing import (
    capture_inputs,
    edit_output,
    final_hidden,
    kv_cache_keyword,
    logits_from_hidden,
    replay_blocks_below,
    returned_kv_cache,
    run_until,
)
from kedit.paths import cache_dir, fill_once, lock_path, sha256_text, write_json_atomic
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
    cached on disk (keyed by the start token too: the samples begin after it).
    """
    spec = json.dumps({"lengths": [list(p) for p in length_params], "seed": seed, "seeds": TEMPLATE_SEEDS,
                       "tokenization": lm.tokenization})
    path = cache_dir("templates") / f"{lm.fingerprint[:24]}-{sha256_text(spec)[:16]}.json"
    # under a lock: processes sharing the cache (a sweep's runs) sample them once and all use those
    return fill_once(lock_path(path), lambda: _cached_templates(path),
                     lambda: _sample_templates(lm, length_params, seed, spec, path))


def _cached_templates(path: Path) -> list[str] | None:
    if path.is_file():
        try:
            return json.loads(path.read_text())["templates"]
        except (json.JSONDecodeError, KeyError):
            return None
    return None


def _sample_templates(lm: LoadedModel, length_params: Sequence[Sequence[int]], seed: int, spec: str,
                      path: Path) -> list[str]:
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


def template_weights(length_params: Sequence[Sequence[int]]) -> list[float]:
    """MEMIT's key weights (D.9) for the templates of :func:`context_templates`: keys are averaged
    within each group (the bare prompt is a group of its own), then the group means are averaged.
    With MEMIT's one group of 5 the bare prompt weighs 1/2 and each generated template 1/10."""
    sizes = [1] + [int(count) for _, count in length_params]
    return [1.0 / (len(sizes) * size) for size in sizes for _ in range(size)]


def subject_prefix_ids(lm: LoadedModel, request: EditRequest, templates: Sequence[str],
                       fact_token: str) -> list[tuple[int, ...]]:
    """For each template, the filled prompt's tokens up to and including the subject token.

    What a causal model computes at a token depends only on the tokens up to it, so the rest of
    the prompt is not needed for keys or hidden states read there.
    """
    prefixes = []
    for prompt_template, text in filled_templates(request, templates):
        index = subject_token_index(lm.tokenizer, prompt_template, request.subject, fact_token)
        prefixes.append(tuple(encode(lm.tokenizer, text)[: index + 1]))
    return prefixes


@torch.no_grad()
def last_token_states(lm: LoadedModel, sequences: Sequence[Sequence[int]], module_path: str, read: str,
                      token_budget: int = 4096) -> torch.Tensor:
    """(n, width) float32 ``read`` ("input" or "output") of ``module_path`` at the last token of
    each sequence. Identical sequences are computed once; sequences are sorted by length and
    left-padded (the last token is then the last column) in batches of at most ``token_budget``
    padded tokens; each forward stops after the module."""
    if read not in ("input", "output"):
        raise ValueError(f"read must be 'input' or 'output', not {read!r}")
    unique = sorted(set(map(tuple, sequences)), key=len)
    module = lm.module(module_path)
    seen: dict[str, torch.Tensor] = {}

    def hook(_module, args, output):
        value = args[0] if read == "input" else output
        seen["value"] = (value[0] if isinstance(value, tuple) else value)[:, -1]

    states: dict[tuple[int, ...], torch.Tensor] = {}
    start = 0
    handle = module.register_forward_hook(hook)
    try:
        while start < len(unique):
            stop = start + 1
            while stop < len(unique) and (stop + 1 - start) * len(unique[stop]) <= token_budget:
                stop += 1
            batch = pad_left(unique[start:stop], lm.pad_token_id, lm.device)
            run_until(lm, batch, module)
            for sequence, state in zip(unique[start:stop], seen.pop("value").float(), strict=True):
                states[sequence] = state
            start = stop
    finally:
        handle.remove()
    return torch.stack([states[tuple(sequence)] for sequence in sequences])


def weighted_subject_keys(lm: LoadedModel, requests: Sequence[EditRequest], layer: int, templates: Sequence[str],
                          weights: Sequence[float], fact_token: str) -> torch.Tensor:
    """(n, d_k) MEMIT keys (D.9): layer ``layer``'s MLP keys at the subject token of each request
    after each template, combined with ``weights`` (one per template)."""
    if len(weights) != len(templates):
        raise ValueError(f"{len(weights)} template weights for {len(templates)} templates")
    sequences = [ids for request in requests for ids in subject_prefix_ids(lm, request, templates, fact_token)]
    keys = last_token_states(lm, sequences, lm.anatomy.mlp_out_paths[layer], "input")
    keys = keys.reshape(len(requests), len(templates), -1)
    return torch.einsum("t,ntk->nk", torch.tensor(weights, dtype=keys.dtype, device=keys.device), keys)


def subject_output(lm: LoadedModel, requests: Sequence[EditRequest], module_path: str, fact_token: str) -> torch.Tensor:
    """(n, width) output of module ``module_path`` at the subject token of each bare prompt."""
    sequences = [subject_prefix_ids(lm, request, [SUBJECT_SLOT], fact_token)[0] for request in requests]
    return last_token_states(lm, sequences, module_path, "output")


def subject_hidden(lm: LoadedModel, requests: Sequence[EditRequest], layer: int, fact_token: str) -> torch.Tensor:
    """(n, d) output of block ``layer`` (the residual stream) at the subject token of each bare prompt."""
    return subject_output(lm, requests, lm.anatomy.block_paths[layer], fact_token)


# --------------------------------------------------------------------------- target value


@dataclass(frozen=True)
class ValueOptimization:
    """Settings of the v* / z optimisation (ROME D.5, MEMIT D.8).

    The first seven fields define the objective and the optimiser; the rest only change how fast
    it runs (caches, how many requests share a forward), never the result beyond float rounding.
    """

    steps: int = 20
    lr: float = 0.5
    weight_decay: float = 0.5
    clamp_norm_factor: float = 4.0
    kl_factor: float = 0.0625
    early_stop_loss: float = 0.05
    fact_token: str = "subject_last"
    cache_lower_blocks: bool = True
    cache_prefix: bool = True
    requests_per_chunk: int = 32  # requests optimised together in one padded batch
    chunk_token_budget: int = 2048  # padded tokens a chunk's step forward may hold

    def objective(self) -> dict[str, Any]:
        """The fields that determine the optimised values (what a cache of them must be keyed by)."""
        names = ("steps", "lr", "weight_decay", "clamp_norm_factor", "kl_factor", "early_stop_loss", "fact_token")
        return {name: getattr(self, name) for name in names}


@dataclass(frozen=True)
class TargetValue:
    """Result of the optimisation: v* = v_init + delta at the edited module's output."""

    v_init: torch.Tensor  # (d,) module output at the subject token of the bare prompt
    delta: torch.Tensor  # (d,)
    losses: tuple[float, ...] = field(default=())  # loss at each iteration, the last one included

    @property
    def value(self) -> torch.Tensor:
        return self.v_init + self.delta


@dataclass(frozen=True)
class _RequestRows:
    """The rows one request adds to the batch: prompt + target[:-1] after each context template
    (the first is the bare "{}"), then the essence prompt "{} is a" (KL term)."""

    sequences: tuple[tuple[int, ...], ...]
    subjects: tuple[int, ...]  # subject token index in each sequence
    target_ids: tuple[int, ...]

    @property
    def n_rewrite(self) -> int:
        return len(self.sequences) - 1

    def width(self, prefix_cached: bool) -> int:
        """Tokens per row a step recomputes: from the subject token on when the prefix is cached."""
        if prefix_cached:
            return max(len(seq) - p for seq, p in zip(self.sequences, self.subjects, strict=True))
        return max(len(seq) for seq in self.sequences)


def _request_rows(lm: LoadedModel, request: EditRequest, templates: Sequence[str], fact_token: str) -> _RequestRows:
    tokenizer = lm.tokenizer
    _, target_ids = encode_pair(tokenizer, request.text, request.target_new)
    sequences, subjects = [], []
    for prompt_template, text in filled_templates(request, templates):
        sequences.append(tuple(encode(tokenizer, text) + target_ids[:-1]))
        subjects.append(subject_token_index(tokenizer, prompt_template, request.subject, fact_token))
    sequences.append(tuple(encode(tokenizer, ESSENCE_TEMPLATE.replace(SUBJECT_SLOT, request.subject))))
    subjects.append(subject_token_index(tokenizer, ESSENCE_TEMPLATE, request.subject, fact_token))
    return _RequestRows(tuple(sequences), tuple(subjects), tuple(target_ids))


class _CacheSnapshot:
    """A prefix KV cache that every step starts from: ``restore`` drops what a forward appended,
    ``select`` keeps only some rows (requests that are done leave the batch)."""

    def __init__(self, cache) -> None:
        self.cache = cache
        self.saved = [dict(vars(layer)) for layer in cache.layers]

    def restore(self) -> None:
        for layer, saved in zip(self.cache.layers, self.saved, strict=True):
            vars(layer).clear()
            vars(layer).update(saved)

    def select(self, rows: torch.Tensor) -> None:
        self.restore()
        self.cache.batch_select_indices(rows)
        self.saved = [dict(vars(layer)) for layer in self.cache.layers]


@dataclass
class _ChunkBatch:
    """The rows of a chunk of requests laid out for one step, and where to read the results.

    Request indices are local to the chunk; ``live`` lists the requests whose rows are in the
    batch (ascending), ``essence_rows`` / ``bare_rows`` give each live request's essence-prompt and
    bare-template rows. Each target entry is one predicted target token: its row, column, token id,
    weight 1 / (n_target * n_rewrite) (so the weighted sum is the mean over templates of the mean
    token NLL) and request.
    """

    kwargs: dict
    snapshot: _CacheSnapshot | None
    subject_cols: torch.Tensor  # (B,)
    row_request: torch.Tensor  # (B,)
    live: torch.Tensor  # (n_live,)
    essence_rows: torch.Tensor  # (n_live,)
    bare_rows: torch.Tensor  # (n_live,)
    target_rows: torch.Tensor  # (N,)
    target_cols: torch.Tensor  # (N,)
    target_ids: torch.Tensor  # (N,)
    target_weights: torch.Tensor  # (N,)
    target_request: torch.Tensor  # (N,)

    def restore(self) -> None:
        if self.snapshot is not None:
            self.snapshot.restore()

    def select(self, keep: torch.Tensor) -> _ChunkBatch:
        """The batch without the rows of requests not in ``keep`` (rows never interact, so the
        remaining rows compute exactly what they did)."""
        rows = torch.nonzero(torch.isin(self.row_request, keep))[:, 0]
        new_index = torch.full_like(self.row_request, -1)
        new_index[rows] = torch.arange(len(rows), device=rows.device)
        entries = torch.nonzero(new_index[self.target_rows] >= 0)[:, 0]
        requests = torch.nonzero(torch.isin(self.live, keep))[:, 0]
        kwargs = {key: value[rows] if isinstance(value, torch.Tensor) else value for key, value in self.kwargs.items()}
        if self.snapshot is not None:
            self.snapshot.select(rows)
        return _ChunkBatch(
            kwargs=kwargs, snapshot=self.snapshot, subject_cols=self.subject_cols[rows],
            row_request=self.row_request[rows], live=self.live[requests],
            essence_rows=new_index[self.essence_rows[requests]], bare_rows=new_index[self.bare_rows[requests]],
            target_rows=new_index[self.target_rows[entries]], target_cols=self.target_cols[entries],
            target_ids=self.target_ids[entries], target_weights=self.target_weights[entries],
            target_request=self.target_request[entries],
        )


def _full_layout(lm: LoadedModel, sequences: list[tuple[int, ...]]):
    """Left-padded rows, every token recomputed at every step: (kwargs, snapshot, column of (row, index))."""
    batch = pad_left(sequences, lm.pad_token_id, lm.device)
    return batch.model_inputs(), None, batch.column


def _sliding_window(lm: LoadedModel) -> int | None:
    """The attention window of models that have sliding-window layers (None: full attention only)."""
    config = text_config(lm.model)
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None) or ()
    if window and (not layer_types or any("sliding" in str(kind) for kind in layer_types)):
        return int(window)
    return None


def _shared_lengths(sequences: Sequence[Sequence[int]], subjects: Sequence[int], groups: Sequence[int]) -> list[int]:
    """For each row, how many leading tokens it shares with every row of its group (stopping
    before the subject token of any of them)."""
    shared: dict[int, int] = {}
    for group in set(groups):
        members = [row for row, g in enumerate(groups) if g == group]
        limit = min(subjects[row] for row in members)
        first = sequences[members[0]]
        length = 0
        while length < limit and all(sequences[row][length] == first[length] for row in members):
            length += 1
        shared[group] = length
    return [shared[group] for group in groups]


def _prefix_layout(lm: LoadedModel, sequences: list[tuple[int, ...]], subjects: list[int], groups: list[int]):
    """Rows whose tokens before the subject token come from a KV cache computed once.

    Tokens before the subject token are not affected by a change at the subject token, at any
    layer. Rows of one ``group`` (the same context template) start with the same tokens (the
    template's text): that shared part is computed once per group, its keys and values copied to
    the group's rows, and only each row's own tokens up to the subject are added. Row r is laid out
    as ``[pad | shared (s_r) | pad | own prefix (b_r) | suffix (q_r) | right pad]`` with every
    prefix ending at column P, so the subject token is column 0 of every row's suffix. Padding
    columns are masked and positions are explicit, so the numbers equal an unpadded run; models
    whose sliding window is narrower than a row would see the inner padding inside their window,
    so there every row is its own group (no sharing, no inner padding).
    Returns None when no row has a prefix or the model's cache does not expose its layers.
    """
    prefix_width = max(subjects)
    if prefix_width == 0:
        return None
    rows = len(sequences)
    suffix_width = max(len(seq) - p for seq, p in zip(sequences, subjects, strict=True))
    window = _sliding_window(lm)
    if window is not None and window <= 2 * prefix_width + suffix_width:  # columns of a row, at most
        groups = list(range(rows))
    shared = _shared_lengths(sequences, subjects, groups)
    own = [p - s for p, s in zip(subjects, shared, strict=True)]
    shared_width, own_width = max(shared), max(own)
    width = shared_width + own_width
    device = lm.device
    cache = None
    shared_mask = torch.zeros((rows, shared_width), dtype=torch.long)
    if shared_width:
        # One row per group with a shared part; rows of groups without one point at any row:
        # their shared columns are masked.
        leaders: dict[int, int] = {}
        for row, group in enumerate(groups):
            if shared[row] and group not in leaders:
                leaders[group] = row
        order = list(leaders)
        ids = torch.full((len(order), shared_width), lm.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(order), shared_width), dtype=torch.long)
        for index, group in enumerate(order):
            length = shared[leaders[group]]
            ids[index, shared_width - length:] = torch.tensor(sequences[leaders[group]][:length])
            mask[index, shared_width - length:] = 1
        positions = (mask.cumsum(dim=1) - 1).clamp_min(0)
        with torch.no_grad():
            output = lm.model.base_model(input_ids=ids.to(device), attention_mask=mask.to(device),
                                         position_ids=positions.to(device), use_cache=True)
        cache = returned_kv_cache(output)
        if not getattr(cache, "layers", None):
            return None
        slot = {group: index for index, group in enumerate(order)}
        cache.batch_select_indices(torch.tensor([slot.get(g, 0) for g in groups], device=device))
        for row in range(rows):
            if shared[row]:
                shared_mask[row] = mask[slot[groups[row]]]
    input_ids = torch.full((rows, own_width + suffix_width), lm.pad_token_id, dtype=torch.long)
    attention = torch.cat([shared_mask, torch.zeros((rows, own_width + suffix_width), dtype=torch.long)], dim=1)
    positions = torch.zeros((rows, own_width + suffix_width), dtype=torch.long)
    for row, (sequence, p) in enumerate(zip(sequences, subjects, strict=True)):
        q = len(sequence) - p
        span = slice(own_width - own[row], own_width + q)
        input_ids[row, span] = torch.tensor(sequence[shared[row]:])
        attention[row, shared_width + span.start : shared_width + span.stop] = 1
        positions[row, span] = torch.arange(shared[row], len(sequence))
        positions[row, own_width + q :] = len(sequence)  # right padding: never attended to
    input_ids, attention, positions = (t.to(device) for t in (input_ids, attention, positions))
    if own_width:
        with torch.no_grad():
            output = lm.model.base_model(input_ids=input_ids[:, :own_width], attention_mask=attention[:, :width],
                                         position_ids=positions[:, :own_width], use_cache=True,
                                         **{kv_cache_keyword(lm): cache})
        cache = returned_kv_cache(output)
    if not getattr(cache, "layers", None):
        return None
    kwargs = {
        "input_ids": input_ids[:, own_width:],
        "attention_mask": attention,
        "position_ids": positions[:, own_width:],
        kv_cache_keyword(lm): cache,
        "use_cache": True,
    }
    return kwargs, _CacheSnapshot(cache), lambda row, index: index - subjects[row]


def _layout_chunk(lm: LoadedModel, chunk: Sequence[_RequestRows], cache_prefix: bool) -> _ChunkBatch:
    sequences, subjects, groups, row_request, essence_rows, bare_rows = [], [], [], [], [], []
    for index, rows in enumerate(chunk):
        bare_rows.append(len(sequences))
        essence_rows.append(len(sequences) + rows.n_rewrite)
        sequences.extend(rows.sequences)
        subjects.extend(rows.subjects)
        groups.extend(range(len(rows.sequences)))  # row j of every request: the same template
        row_request.extend([index] * len(rows.sequences))
    layout = _prefix_layout(lm, sequences, subjects, groups) if cache_prefix else None
    kwargs, snapshot, column = layout if layout is not None else _full_layout(lm, sequences)
    entries: list[tuple[int, int, int, float, int]] = []
    for index, rows in enumerate(chunk):
        n_target = len(rows.target_ids)
        weight = 1.0 / (n_target * rows.n_rewrite)
        for row in range(bare_rows[index], bare_rows[index] + rows.n_rewrite):
            # The last n_target positions of a row (prompt + target[:-1]) predict the target tokens.
            length = len(sequences[row])
            for m, token in enumerate(rows.target_ids):
                entries.append((row, column(row, length - n_target + m), token, weight, index))
    device = lm.device

    def tensor(values, dtype=torch.long) -> torch.Tensor:
        return torch.tensor(values, dtype=dtype, device=device)

    target_rows, target_cols, target_ids, weights, target_request = zip(*entries, strict=True)
    return _ChunkBatch(
        kwargs=kwargs, snapshot=snapshot,
        subject_cols=tensor([column(row, p) for row, p in enumerate(subjects)]),
        row_request=tensor(row_request), live=tensor(list(range(len(chunk)))),
        essence_rows=tensor(essence_rows), bare_rows=tensor(bare_rows),
        target_rows=tensor(target_rows), target_cols=tensor(target_cols), target_ids=tensor(target_ids),
        target_weights=tensor(weights, torch.float32), target_request=tensor(target_request),
    )


def _plan_chunks(rows: Sequence[_RequestRows], settings: ValueOptimization) -> list[list[int]]:
    """Group requests (sorted by row width, so little padding) under the chunk limits."""
    widths = [r.width(settings.cache_prefix) for r in rows]
    chunks: list[list[int]] = []
    current: list[int] = []
    n_rows = width = 0
    for index in sorted(range(len(rows)), key=widths.__getitem__):
        grown_rows, grown_width = n_rows + len(rows[index].sequences), max(width, widths[index])
        if current and (len(current) >= settings.requests_per_chunk
                        or grown_rows * grown_width > settings.chunk_token_budget):
            chunks.append(current)
            current, grown_rows, grown_width = [], len(rows[index].sequences), widths[index]
        current.append(index)
        n_rows, width = grown_rows, grown_width
    if current:
        chunks.append(current)
    return chunks


@dataclass
class _OptimizationState:
    """What the output hook reads: the current batch, the deltas, and v_init once recorded."""

    batch: _ChunkBatch
    delta: torch.Tensor  # (n_chunk, d)
    v_init: torch.Tensor | None = None  # (n_chunk, d)

    def add_deltas(self, output):
        """Add each row's request delta at the row's subject column of ``output`` (a tensor, or a
        tuple whose first item is the hidden state); record v_init on the first call."""
        hidden = output[0] if isinstance(output, tuple) else output
        batch = self.batch
        if self.v_init is None:  # the first forward has every request of the chunk, in order
            self.v_init = hidden[batch.bare_rows, batch.subject_cols[batch.bare_rows]].detach().float().clone()
        mask = torch.zeros(hidden.shape[:2] + (1,), dtype=hidden.dtype, device=hidden.device)
        mask[torch.arange(hidden.shape[0], device=hidden.device), batch.subject_cols] = 1.0
        changed = hidden + mask * self.delta[batch.row_request].to(hidden.dtype)[:, None, :]
        return (changed, *output[1:]) if isinstance(output, tuple) else changed


def _install_hooks(stack: contextlib.ExitStack, lm: LoadedModel, state: _OptimizationState, module_path: str,
                   replayed: int, settings: ValueOptimization) -> None:
    """Lower-block replay first (its recording forward must not see the deltas), then the delta hook."""
    batch = state.batch
    if settings.cache_lower_blocks:
        stack.enter_context(replay_blocks_below(lm, replayed, batch.kwargs, before=batch.restore))
    stack.enter_context(edit_output(lm.module(module_path), state.add_deltas))


def _chunk_losses(lm: LoadedModel, state: _OptimizationState, kl_init: torch.Tensor | None,
                  settings: ValueOptimization) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward: (per-request loss (n_chunk,), essence log-probs of the live requests)."""
    batch = state.batch
    batch.restore()
    hidden = final_hidden(lm, batch.kwargs)  # (B, T, d)
    n = state.delta.shape[0]
    target_hidden = hidden[batch.target_rows, batch.target_cols]  # (N, d)
    log_probs = torch.log_softmax(logits_from_hidden(lm, target_hidden).float(), dim=-1)
    token_log_probs = log_probs.gather(1, batch.target_ids[:, None])[:, 0]
    nll = torch.zeros(n, device=hidden.device).index_add(0, batch.target_request, -token_log_probs * batch.target_weights)
    essence_hidden = hidden[batch.essence_rows, batch.subject_cols[batch.essence_rows]]  # (n_live, d)
    essence = torch.log_softmax(logits_from_hidden(lm, essence_hidden).float(), dim=-1)
    reference = essence.detach() if kl_init is None else kl_init[batch.live]
    # KL(p_current || p_initial) of each essence prompt's next-token distribution.
    kl_live = settings.kl_factor * torch.sum(essence.exp() * (essence - reference), dim=-1)
    kl = torch.zeros(n, device=hidden.device).index_add(0, batch.live, kl_live)
    decay = settings.weight_decay * state.delta.norm(dim=1) / state.v_init.norm(dim=1) ** 2
    return nll + kl + decay, essence.detach()


def _optimize_chunk(lm: LoadedModel, chunk: Sequence[_RequestRows], module_path: str, replayed: int,
                    settings: ValueOptimization) -> list[TargetValue]:
    """Optimise the deltas of a chunk of requests together; each request follows the trajectory of
    a run on its own (its loss depends only on its rows and Adam is elementwise)."""
    n = len(chunk)
    delta = torch.zeros(n, lm.anatomy.hidden_size, device=lm.device, dtype=torch.float32, requires_grad=True)
    state = _OptimizationState(_layout_chunk(lm, chunk, settings.cache_prefix), delta)
    optimizer = torch.optim.Adam([delta], lr=settings.lr)
    active = torch.ones(n, dtype=torch.bool, device=lm.device)
    losses: list[list[float]] = [[] for _ in range(n)]
    kl_init = None
    stack = contextlib.ExitStack()
    try:
        _install_hooks(stack, lm, state, module_path, replayed, settings)
        with torch.enable_grad():
            for index in range(settings.steps):
                optimizer.zero_grad()
                loss, essence = _chunk_losses(lm, state, kl_init, settings)
                if kl_init is None:
                    kl_init = essence  # the first forward holds every request, in order
                values = loss.detach()
                for request in torch.nonzero(active)[:, 0].tolist():
                    losses[request].append(float(values[request]))
                # A request stops where a run of its own would: loss under the threshold or last
                # iteration, both without a step.
                active &= ~(values < settings.early_stop_loss)
                if index == settings.steps - 1 or not bool(active.any()):
                    break
                loss[active].sum().backward()
                before = delta.detach().clone()
                optimizer.step()
                with torch.no_grad():
                    # Adam moves frozen rows too (momentum): put them back exactly.
                    delta[~active] = before[~active]
                    limit = settings.clamp_norm_factor * state.v_init.norm(dim=1)
                    norms = delta.norm(dim=1)
                    over = active & (norms > limit)
                    delta[over] *= (limit[over] / norms[over])[:, None]
                live_active = active[state.batch.live]
                if int(live_active.sum()) <= 0.9 * len(live_active):
                    # Enough requests are done: drop their rows (and re-record the replayed blocks).
                    stack.close()
                    state.batch.restore()
                    state.batch = state.batch.select(torch.nonzero(active)[:, 0])
                    stack = contextlib.ExitStack()
                    _install_hooks(stack, lm, state, module_path, replayed, settings)
    finally:
        stack.close()
        state.batch.restore()
    v_init, final = state.v_init, delta.detach()
    return [TargetValue(v_init=v_init[i].clone(), delta=final[i].clone(), losses=tuple(losses[i])) for i in range(n)]


def optimize_target_values(
    lm: LoadedModel,
    requests: Sequence[EditRequest],
    module_path: str,
    layer: int,
    templates: Sequence[str],
    settings: ValueOptimization,
    progress: bool = False,
) -> list[TargetValue]:
    """For each request, find ``delta`` such that adding it to ``module_path``'s output at the
    subject token makes the model predict ``request.target_new`` after every context template
    (ROME D.5 / MEMIT D.8). Requests are optimised in chunks; each gets the result a run on its own
    would give (up to float rounding of the wider batch).

    ``layer`` is the block that contains (ROME: the MLP output projection) or is (MEMIT: the block
    output) ``module_path``. Two savings leave the results unchanged: tokens before the subject
    come from a KV cache (``settings.cache_prefix``), and blocks whose outputs cannot change are
    replayed from their first outputs (``settings.cache_lower_blocks``): those below ``layer``, and
    ``layer`` itself when ``module_path`` is the whole block. Each request's essence row and its
    rows after each template are independent rows of the batch, so a request that reaches the
    early-stop loss is frozen and its rows leave the batch. Templates[0] must be the bare ``"{}"``:
    v_init is read there.
    """
    if not templates or templates[0] != SUBJECT_SLOT:
        raise ValueError("the first context template must be the bare '{}'")
    if settings.steps < 1:
        raise ValueError("the optimisation needs at least one step")
    replayed = layer + 1 if module_path == lm.anatomy.block_paths[layer] else layer
    rows = [_request_rows(lm, request, templates, settings.fact_token) for request in requests]
    results: list[TargetValue | None] = [None] * len(requests)
    chunks = _plan_chunks(rows, settings)
    bar = tqdm(total=len(requests), desc="target values", unit="req", disable=not progress, leave=False)
    try:
        for chunk in chunks:
            for index, value in zip(chunk, _optimize_chunk(lm, [rows[i] for i in chunk], module_path, replayed,
                                                           settings), strict=True):
                results[index] = value
            bar.update(len(chunk))
    finally:
        bar.close()
    return results  # type: ignore[return-value]


def optimize_target_value(
    lm: LoadedModel,
    request: EditRequest,
    module_path: str,
    layer: int,
    templates: Sequence[str],
    settings: ValueOptimization,
) -> TargetValue:
    """:func:`optimize_target_values` for one request (ROME's v*)."""
    return optimize_target_values(lm, [request], module_path, layer, templates, settings)[0]
