"""SERAC: Semi-parametric Editing with a Retrieval-Augmented Counterfactual model (Mitchell et al.
2022, "Memory-Based Model Editing at Scale"), the paper's supervised variant (SPEC-ALGORITHMS G.1–G.5).

The base model is never changed. An edit is a *memory* of the requests as text; at inference a
scope classifier compares each prompt with the memory, and a prompt in the scope of an entry is
answered by a counterfactual model shown that entry before the prompt. Everything else is answered
by the base model exactly as without the edit.

* **Memory** (G.1): entry j = (prompt_j, target_j) of request j, kept as text. kedit's requests keep
  prompt and target apart, so the classifier's key is the edit prompt itself; the reference code
  stores GPT-style inputs with the answer attached and cuts the last word off for the key
  (``rsplit(" ", 1)[0]``, which leaks multi-word targets into the key, G.2 FLAG) — not needed here.
  Each entry is embedded once, when the edit is computed, and the embeddings are stored with the
  edit; the reference re-encodes every memory entry for every query batch.
* **Scope classifier** (G.2, embedding / bi-encoder form): a sentence encoder (``classifier``:
  all-MiniLM-L6-v2, shipped offline, or any Hugging Face BERT-like folder) gives e = the mean of
  its last hidden states over the real tokens, L2-normalised (``classifier_pooling: mean``,
  ``classifier_normalize: true``): the sentence vector MiniLM was trained to produce, so distances
  mean something before any training. The reference reads the [CLS] state of DistilBERT, whose
  CLS was never trained as a sentence vector (``classifier_pooling: cls`` does that).
  d_j = ||e_query − e_j||², log-sim = −scale·d_j, s_j = exp(−scale·d_j) ∈ (0, 1]. ``scale`` is a
  LEARNED parameter (stored as log-scale so it stays positive, initialised to ``scale_init`` = 1,
  the reference's value); in both reference codebases it is a fixed buffer (G.2 FLAG).
  The query is the prompt being scored, without its target: routing never depends on the answer
  being scored (the reference's GPT-style query text includes it).
* **Routing** (G.4, hard): s = max_j s_j, j* = argmax; the prompt goes to the counterfactual model
  iff s > ``route_threshold`` (0.5), else to the base model. Ties go to the later memory entry,
  so a fact edited twice answers with its latest edit. EasyEdit's soft mixture
  log((1 − s) p_base + s p_cntr) (G.4 / G.6 FLAG: its ``supervised: false``) is not offered.
  Routing runs inside kedit's one scoring primitive (:mod:`kedit.models.routing`): the edit installs
  a query router on the model; :func:`kedit.models.scoring.score`, ``top_next_tokens`` and
  ``generate`` send routed prompts to the counterfactual model.
* **Counterfactual model** (G.3): by default a copy of the base model (``counterfactual: null``),
  or a smaller model named by ``counterfactual`` whose vocabulary is the base tokenizer's (checked;
  it is then fed the base tokenizer's ids). It is shown ``prompt_j + " " + target_j + " " + query``
  (G.3's GPT-style context: the stored input, which there already ends in the answer, plus a
  space; plain concatenation, no separator token) and scores the target after that text.
  Prompt and target are tokenised by :func:`kedit.models.scoring.encode_pair`, in training too.
  ``cntr_layers`` names the blocks of the copy that are trained (null: every parameter, as in the
  paper; ``[]``: a frozen counterfactual, G.3's ``freeze_cntr``); the artifact stores only the
  trained tensors and the counterfactual is rebuilt from the base weights + those tensors.
* **Training** (G.5, supervised): per micro-batch n = ``train_batch_size`` training cases; for case i the
  memory entry is its request, the positive query a rephrase (the prompt itself when it has none)
  and the negative query one of its locality prompts (else another training case's prompt).
  L_cls = balanced BCE on the log-sims: mean_pos(−log s) + mean_neg(−log(1 − s)), positives
  (rephrase i, entry i), negatives (negative i, entry i), each averaged separately
  (``all_negatives``: every (negative i, entry j) pair, the reference's ``use_all_negatives``).
  L_cntr = masked mean NLL (over all target tokens of the micro-batch) of target i given the GOLD
  entry i + rephrase i (not the classifier's choice). With SSS (SPEC C; ``sss_coef`` = C, default 0
  = off): L_edit' = C·SSS + (1 − C)·L_cntr, SSS = Σ (∂L_cntr/∂h)², h the counterfactual's final
  hidden states (after the final norm) on the whole (context + query + target) input, all
  positions, taken with ``create_graph``; then L = cedit·L_edit' + cloc·L_cls (``edit_coef`` =
  cedit = 0.1, ``loc_coef`` = cloc = 1, the names MEND uses here; the reference's names are aliases):
  the regulariser sits inside the cedit term, unlike MEND's C·SSS + (1 − C)·(cedit L_e + cloc L_loc).
  One Adam update (lr 1e-5, ``scale_lr`` for the scale if set) per step over ``accumulate_steps``
  micro-batches (the paper accumulates 10), gradient norm clipped at 100 over all parameters
  jointly. Dropout is 0 as in the paper: the modules stay in eval mode. Each step draws its cases
  and queries from ``random.Random(f"{seed}:{step}")`` only, so a resumed run repeats an
  uninterrupted one step for step. Validation: val_loss = cedit·L_cntr + cloc·L_cls (no SSS) on
  the first ``val_cases`` held-out cases (first rephrase, first locality prompt), plus routing
  accuracy (per pair: positive s > threshold, negative s ≤ threshold) and counterfactual token accuracy.
* **Hard negatives** (G.5 ``data.hard_neg``, the paper's main zsRE run): before the first step every
  training prompt is embedded by a FROZEN sentence encoder (``hard_neg_embedder``: all-MiniLM-L6-v2,
  mean-pooled and L2-normalised as sentence-transformers does) and its ``hard_neg_neighbours`` (100)
  nearest other training prompts by cosine are kept — never the case itself nor another case with
  the same prompt text. The table is stored in the training folder under a digest of (embedder
  weights, prompts, neighbours), so a resumed run reads it back instead of recomputing it (and
  draws from the very same numbers). With probability ``hard_neg_prob`` (0.5; 0: off) a micro-batch
  — one draw per micro-batch, as the reference's ``EditBatchSampler`` — takes the negative of each
  case i from i's neighbours ranked ``hard_neg_exclude`` + 1 … ``hard_neg_neighbours`` (26–100: the
  nearest 25 are left out as likely paraphrases), drawn ∝ exp(cos / ``hard_neg_temperature``) (0.1)
  with the step's RNG; otherwise as above. Unlike the reference, a hard negative is not resampled
  when it is the prompt of another case of the same micro-batch (``all_negatives`` masks that pair).
  Validation keeps its plain negatives (first locality prompt).
"""

from __future__ import annotations

import bisect
import copy
import hashlib
import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from kedit.edits.base import (
    check_base,
    check_combinable,
    check_files,
    manifest_of,
    read_manifest,
    register_kind,
    requests_of,
    save_edit_files,
)
from kedit.errors import EditStateError, KeditError
from kedit.methods.base import register
from kedit.methods.embeddings import MINILM, MiniLMEmbedder, mean_pool, minilm_dir
from kedit.methods.hparam_types import check_values
from kedit.methods.hparams import build_hparams
from kedit.methods.losses import per_request_nll, sss_penalty
from kedit.models.anatomy import find_anatomy
from kedit.models.batching import Batch, pad_left
from kedit.models.fingerprint import weights_fingerprint
from kedit.models.loading import LoadedModel
from kedit.models.scoring import encode_pair
from kedit.models.tracing import final_hidden, logits_from_hidden
from kedit.paths import atomic_path, cache_dir, sha256_file
from kedit.requests import SUBJECT_SLOT, Case, EditRequest
from kedit.training.artifact import MANIFEST_FILE

DEFAULTS_YAML = Path(__file__).with_name("serac.yaml")
METHOD = "serac"
MEMORY_KIND = "edit-memory"
EDITOR_VERSION = 1
MEMORY_FILE = "memory.safetensors"
MINILM_NAMES = ("minilm", MINILM)
POOLINGS = ("mean", "cls")
CLASSIFIER_MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length
RUNTIME_KEY = "serac-runtime:"  # lm.reuse key prefix, + the artifact manifest's sha256
# the artifact's tensor names
CLASSIFIER_PREFIX = "classifier."
COUNTERFACTUAL_PREFIX = "counterfactual."
CNTR_BASE_KEY = "counterfactual_base"  # sha256 fingerprint (32 bytes) of the weights the counterfactual started from
BCE_EPS = torch.finfo(torch.float32).eps
EMBED_BATCH = 64  # texts per classifier forward at inference
NEGATIVE_DRAWS = 1000  # draws of another case's prompt for a case without locality prompts


# ------------------------------------------------------------------------------------ hyperparameters


@dataclass(frozen=True)
class SERACHparams:
    """Defaults follow the paper's supervised SERAC (serac ``config.yaml`` / ``alg/rep.yaml``).

    ``artifact``, ``route_threshold`` and ``allow_training_overlap`` are read at edit time only;
    every other field shapes the trained editor (:meth:`SERAC.training_hparams`).
    """

    artifact: str | None = None  # a trained editor's folder; None: the newest matching one in the store
    classifier: str = "minilm"  # "minilm" (all-MiniLM-L6-v2, offline) or a Hugging Face BERT-like folder
    classifier_pooling: str = "mean"  # "mean" over real tokens, or "cls" (the reference's BERT read-out)
    classifier_normalize: bool = True  # L2-normalise the sentence vectors before the distance
    scale_init: float = 1.0  # initial value of the learned scale of sim = exp(-scale * d)
    counterfactual: str | None = None  # None: a copy of the base model; else a model sharing its vocabulary
    cntr_layers: tuple[int, ...] | None = None  # blocks of the counterfactual trained; None: every parameter
    route_threshold: float = 0.5  # a prompt is routed iff max_j sim_j > this
    train_batch_size: int = 10  # training cases per micro-batch (the paper's batch_size: 10)
    accumulate_steps: int = 10  # micro-batches per Adam update (the paper: 10)
    lr: float = 1e-5
    scale_lr: float | None = None  # learning rate of the scale; None: lr
    grad_clip: float = 100.0  # max gradient norm, over every trained parameter jointly
    edit_coef: float = 0.1  # cedit: weight of the counterfactual term L_edit'
    loc_coef: float = 1.0  # cloc: weight of the classifier loss L_cls (the reference's name)
    all_negatives: bool = False  # negatives: every (negative query, entry) pair of the micro-batch, not only i with i
    sss_coef: float = 0.0  # C: L_edit' = C SSS + (1 - C) L_cntr (SPEC C); 0: off
    # hard negatives (G.5 data.hard_neg): with this probability a micro-batch takes case i's negative from the
    # neighbours of its prompt among the training prompts (frozen sentence-embedding cosine); 0: off
    hard_neg_prob: float = 0.5
    hard_neg_neighbours: int = 100  # the nearest this many other training prompts ...
    hard_neg_exclude: int = 25  # ... minus the nearest this many (near-paraphrases of the prompt)
    hard_neg_temperature: float = 0.1  # a candidate is drawn with probability ∝ exp(cosine / this)
    hard_neg_embedder: str = "minilm"  # the frozen sentence encoder of the neighbours ("minilm" or a folder)
    # subject negatives (kedit's, not the paper's): with this probability a case's negative is the case's own
    # subject asked with another training case's question, one whose subject-free template has frozen-embedding
    # cosine below subject_neg_max_cos with the case's own (another relation); 0: off (the paper)
    subject_neg_prob: float = 0.0
    subject_neg_max_cos: float = 0.45
    val_cases: int = 100  # validation cases read from the validation set (the paper validates on 500)
    seed: int = 0
    allow_training_overlap: bool = False  # evaluate on cases seen in training anyway (clearly marked)

    def __post_init__(self) -> None:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in check_values(type(self), values, {}).items():
            object.__setattr__(self, name, value)
        if self.classifier_pooling not in POOLINGS:
            raise KeditError(f"classifier_pooling must be one of {', '.join(POOLINGS)}, got {self.classifier_pooling!r}")
        if not self.scale_init > 0:
            raise KeditError(f"scale_init (of sim = exp(-scale d)) must be > 0, got {self.scale_init!r}")
        if not 0.0 <= self.route_threshold < 1.0:
            raise KeditError(f"route_threshold must be in [0, 1) (sim is in (0, 1]), got {self.route_threshold!r}")
        if not self.grad_clip > 0:
            raise KeditError(f"grad_clip (the max gradient norm) must be > 0, got {self.grad_clip!r}")
        if self.val_cases < 1:
            raise KeditError(f"val_cases must be >= 1, got {self.val_cases!r}")
        if not 0.0 <= self.sss_coef <= 1.0:
            raise KeditError(f"sss_coef (C of L_edit' = C SSS + (1-C) L_cntr) must be in [0, 1], got {self.sss_coef!r}")
        if not 0.0 <= self.hard_neg_prob <= 1.0:
            raise KeditError(f"hard_neg_prob must be in [0, 1] (0: no hard negatives), got {self.hard_neg_prob!r}")
        if not 0 <= self.hard_neg_exclude < self.hard_neg_neighbours:
            raise KeditError("hard negatives are drawn from neighbours hard_neg_exclude+1 … hard_neg_neighbours: need "
                             f"0 <= hard_neg_exclude < hard_neg_neighbours, got {self.hard_neg_exclude!r} and "
                             f"{self.hard_neg_neighbours!r}")
        if not self.hard_neg_temperature > 0:
            raise KeditError(f"hard_neg_temperature must be > 0, got {self.hard_neg_temperature!r}")
        if not 0.0 <= self.subject_neg_prob <= 1.0:
            raise KeditError(f"subject_neg_prob must be in [0, 1] (0: no subject negatives), got {self.subject_neg_prob!r}")
        if not -1.0 < self.subject_neg_max_cos <= 1.0:
            raise KeditError(f"subject_neg_max_cos (a cosine) must be in (-1, 1], got {self.subject_neg_max_cos!r}")
        if self.cntr_layers is not None:
            layers = list(self.cntr_layers)
            if layers != sorted(set(layers)) or any(layer < 0 for layer in layers):
                raise KeditError(f"cntr_layers must be ascending block indices without repeats, got {layers}")
            if not layers and self.sss_coef > 0:
                raise KeditError("sss_coef > 0 needs a trained counterfactual model (cntr_layers is []: frozen); "
                                 "SSS is a gradient of the counterfactual's loss")


def _alias(name: str):
    return lambda value: (name, value)


# EasyEdit / serac spellings of the same settings.
ALIASES = {
    "archive": _alias("artifact"),
    "small_name": _alias("counterfactual"),
    "cls_name": _alias("classifier"),
    "batch_size": _alias("train_batch_size"),  # not kedit.edit's batch_size (requests per sequential edit)
    "accumulate_bs": _alias("accumulate_steps"),
    "cedit": _alias("edit_coef"),
    "cloc": _alias("loc_coef"),
    "hard_neg_neighbors": _alias("hard_neg_neighbours"),  # serac's data.hard_neg_neighbors / hard_neg_temp
    "hard_neg_temp": _alias("hard_neg_temperature"),
}


def classifier_folder(name: str) -> Path:
    """The folder of the classifier's encoder: the installed MiniLM, or a Hugging Face folder."""
    if name in MINILM_NAMES:
        return minilm_dir()
    folder = Path(name).expanduser()
    if not (folder / "config.json").is_file():
        raise KeditError(f"classifier {name!r} is neither 'minilm' nor a Hugging Face model folder (no config.json)")
    return folder


def _model_name(name: str | None) -> str | None:
    """A model named by path as an absolute path (so artifacts are found again from any folder)."""
    if name is None or name in MINILM_NAMES:
        return MINILM if name in MINILM_NAMES else None
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


# ---------------------------------------------------------------------------------- scope classifier


class ScopeClassifier(nn.Module):
    """The bi-encoder of G.2: sentence vectors of queries and memory keys, sim = exp(−scale·d)."""

    def __init__(self, encoder: nn.Module, tokenizer: Any, pooling: str = "mean", normalize: bool = True,
                 scale_init: float = 1.0) -> None:
        super().__init__()
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.normalize = normalize
        self.log_scale = nn.Parameter(torch.tensor(math.log(scale_init), dtype=torch.float32))

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp()

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """(n, d) float32 sentence vectors (with gradients when they are enabled)."""
        device = self.log_scale.device
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=CLASSIFIER_MAX_TOKENS,
                               return_tensors="pt").to(device)
        hidden = self.encoder(**batch).last_hidden_state.float()  # (n, T, d)
        vectors = mean_pool(hidden, batch["attention_mask"]) if self.pooling == "mean" else hidden[:, 0]  # (n, d)
        return F.normalize(vectors, dim=-1) if self.normalize else vectors

    def log_similarity(self, queries: torch.Tensor, keys: torch.Tensor, chunk_elements: int = 1 << 24) -> torch.Tensor:
        """−scale · ||q_i − k_j||² for every query (n, d) and key (m, d) → (n, m), on the keys' device.

        The differences are formed explicitly (no ||q||² + ||k||² − 2 q·k cancellation), a chunk of
        queries at a time so that no more than ``chunk_elements`` of them exist at once.
        """
        queries = queries.to(keys.device)
        rows = max(1, chunk_elements // max(1, keys.shape[0] * keys.shape[1]))
        distances = torch.cat([(queries[start:start + rows, None, :] - keys[None, :, :]).pow(2).sum(-1)
                               for start in range(0, queries.shape[0], rows)])  # (n, m)
        return -self.scale.to(keys.device) * distances

    def paired_log_similarity(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """−scale · ||q_i − k_i||² for rows paired by index, (n, d) and (n, d) → (n,)."""
        return -self.scale * (queries - keys).pow(2).sum(-1)


def load_classifier(hparams: SERACHparams, device: torch.device | str = "cpu") -> ScopeClassifier:
    """The classifier's encoder as pretrained (training starts here; an artifact's tensors replace it)."""
    from transformers import AutoModel, AutoTokenizer

    folder = classifier_folder(hparams.classifier)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        encoder = AutoModel.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
    except OSError as error:
        raise KeditError(f"could not load the SERAC classifier from {folder}: {error}") from error
    classifier = ScopeClassifier(encoder, tokenizer, hparams.classifier_pooling, hparams.classifier_normalize,
                                 hparams.scale_init).to(device)
    classifier.eval()
    classifier.requires_grad_(False)
    return classifier


def balanced_bce(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """G.5's classifier loss on log-similarities: mean over positives of −log s plus mean over
    negatives of −log(1 − s), each averaged separately; float32 eps added where 1 − s is 0.

    positive (P,), negative (N,): log s = −scale·d of in-scope and out-of-scope (query, entry) pairs.
    """
    one_minus = -torch.expm1(negative)  # 1 - s, exact for s near 0
    one_minus = torch.where(one_minus == 0, one_minus + BCE_EPS, one_minus)
    return -positive.mean() - torch.log(one_minus).mean()


# ------------------------------------------------------------------------------ counterfactual model


def memory_context(request: EditRequest) -> str:
    """What the counterfactual model is shown before a query in the scope of ``request`` (G.3)."""
    return f"{request.text} {request.target_new} "


def counterfactual_text(request: EditRequest, query: str) -> str:
    return memory_context(request) + query


@dataclass(frozen=True)
class TargetBatch:
    """Left-padded (prompt + target minus its last token) rows; the last L columns predict the targets."""

    batch: Batch
    labels: torch.Tensor  # (B, L) long target ids, right-aligned, 0 where mask is False
    mask: torch.Tensor  # (B, L) bool, True at target tokens


def target_batch(lm: LoadedModel, pairs: Sequence[tuple[str, str]]) -> TargetBatch:
    """Teacher-forcing inputs for (prompt, target) pairs, tokenised exactly as ``score`` does."""
    encoded = [encode_pair(lm.tokenizer, prompt, target) for prompt, target in pairs]
    batch = pad_left([p + t[:-1] for p, t in encoded], lm.pad_token_id, lm.device)
    width = max(len(t) for _, t in encoded)
    labels = torch.zeros((len(encoded), width), dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.bool)
    for row, (_, target) in enumerate(encoded):
        labels[row, width - len(target):] = torch.tensor(target)
        mask[row, width - len(target):] = True
    return TargetBatch(batch, labels.to(lm.device), mask.to(lm.device))


@dataclass(frozen=True)
class EditTerms:
    """The counterfactual's part of the objective."""

    edit: torch.Tensor  # L_edit' = C SSS + (1 - C) L_cntr (L_cntr when C = 0)
    cntr: torch.Tensor  # L_cntr, masked mean NLL over every target token
    sss: torch.Tensor | None  # None when C = 0
    hits: int  # target tokens that are the argmax
    tokens: int


def edit_terms(hidden: torch.Tensor, head: Any, labels: torch.Tensor, mask: torch.Tensor,
               sss_coef: float) -> EditTerms:
    """L_cntr from final hidden states ``hidden`` (B, T, d) through ``head`` (hidden → logits); the
    last L = labels.shape[1] columns predict ``labels`` (B, L) where ``mask`` (B, L) is True.

    L_cntr is the mean over all target tokens of the batch (sum of NLL / token count, G.5's
    masked mean); SSS = Σ (∂L_cntr/∂hidden)² over every entry of ``hidden`` (SPEC C).
    """
    logits = head(hidden[:, -labels.shape[1]:])  # (B, L, V)
    counts = mask.sum(dim=1)  # (B,)
    cntr = (per_request_nll(logits, labels, mask) * counts).sum() / counts.sum().clamp_min(1)
    with torch.no_grad():
        hits = int(((logits.argmax(-1) == labels) & mask).sum())
    if sss_coef == 0:
        return EditTerms(cntr, cntr, None, hits, int(counts.sum()))
    sss = sss_penalty(cntr, hidden)
    return EditTerms(sss_coef * sss + (1.0 - sss_coef) * cntr, cntr, sss, hits, int(counts.sum()))


def counterfactual_terms(cf: LoadedModel, pairs: Sequence[tuple[str, str]], sss_coef: float) -> EditTerms:
    """:func:`edit_terms` of the counterfactual model ``cf`` on (context + query, target) pairs."""
    batch = target_batch(cf, pairs)
    hidden = final_hidden(cf, batch.batch)  # (B, T, d) after the final norm
    return edit_terms(hidden, lambda h: logits_from_hidden(cf, h), batch.labels, batch.mask, sss_coef)


def check_same_vocabulary(base_tokenizer: Any, other_tokenizer: Any, name: str) -> None:
    """Refuse a counterfactual model whose token ids mean other strings than the base model's."""
    base, other = base_tokenizer.get_vocab(), other_tokenizer.get_vocab()
    if base != other:
        differing = len(set(base.items()) ^ set(other.items()))
        raise KeditError(f"the counterfactual model {name!r} has another vocabulary than the base model "
                         f"({len(other)} vs {len(base)} tokens, {differing} (token, id) entries differ); SERAC feeds "
                         "it the base tokenizer's ids: choose a model of the same family or leave counterfactual unset")


def trainable_names(model: nn.Module, block_paths: Sequence[str], cntr_layers: tuple[int, ...] | None) -> list[str]:
    """Names of the counterfactual's parameters that are trained (each parameter once, tied ones included)."""
    names = [name for name, _ in model.named_parameters()]
    if cntr_layers is None:
        return names
    bad = [layer for layer in cntr_layers if layer >= len(block_paths)]
    if bad:
        raise KeditError(f"cntr_layers {list(cntr_layers)}: the counterfactual model has {len(block_paths)} blocks "
                         f"(0..{len(block_paths) - 1})")
    prefixes = tuple(block_paths[layer] + "." for layer in cntr_layers)
    return [name for name in names if name.startswith(prefixes)]


def counterfactual_start(lm: LoadedModel, hparams: SERACHparams) -> tuple[LoadedModel, str]:
    """A fresh counterfactual model before any trained tensor (a copy of the base, or the named
    model), all parameters frozen, and the fingerprint of its weights."""
    if hparams.counterfactual is None:
        model = copy.deepcopy(lm.model)
        fingerprint = weights_fingerprint(model)
        if fingerprint != lm.fingerprint:
            raise KeditError("the model carries weight edits: SERAC's counterfactual model is a copy of the "
                             "unedited base model; compute or train SERAC on the model as loaded")
        source = f"{lm.source} (SERAC counterfactual copy)"
    else:
        from kedit.models.loading import load_model

        other = load_model(hparams.counterfactual, device=lm.device, dtype=lm.dtype, start_token="none")
        check_same_vocabulary(lm.tokenizer, other.tokenizer, hparams.counterfactual)
        rows = other.model.get_input_embeddings().num_embeddings
        if rows < len(lm.tokenizer):
            raise KeditError(f"the counterfactual model {hparams.counterfactual!r} embeds {rows} tokens, the base "
                             f"tokenizer has {len(lm.tokenizer)}")
        model, fingerprint, source = other.model, other.fingerprint, f"{hparams.counterfactual} (SERAC counterfactual)"
    model.eval()
    model.requires_grad_(False)
    cf = LoadedModel(model=model, tokenizer=lm.tokenizer, fingerprint=fingerprint, anatomy=find_anatomy(model),
                     source=source, device=lm.device, dtype=lm.dtype, start_token=lm.start_token)
    return cf, fingerprint


def _fingerprint_tensor(fingerprint: str) -> torch.Tensor:
    return torch.tensor(list(bytes.fromhex(fingerprint)), dtype=torch.uint8)


# --------------------------------------------------------------------------------- inference runtime


@dataclass
class SERACRuntime:
    """A trained editor ready to answer: the classifier and the counterfactual model, for one base model."""

    classifier: ScopeClassifier
    counterfactual: LoadedModel
    artifact_digest: str  # sha256 of the artifact's manifest (which pins its tensors' sha256)

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """(n, d) float32 sentence vectors on the CPU, ``EMBED_BATCH`` texts per encoder forward."""
        texts = list(texts)
        if not texts:
            return torch.zeros((0, 0))
        return torch.cat([self.classifier.embed(texts[start:start + EMBED_BATCH]).float().cpu()
                          for start in range(0, len(texts), EMBED_BATCH)])


def build_runtime(lm: LoadedModel, artifact: Any, hparams: SERACHparams) -> SERACRuntime:
    """The classifier and counterfactual of ``artifact`` (checked against ``lm``), rebuilt from the
    pretrained classifier / the base weights plus the artifact's trained tensors."""
    from kedit.training.artifact import check_artifact_base

    check_artifact_base(artifact, lm.fingerprint, lm.source)
    tensors = artifact.tensors()
    classifier = load_classifier(hparams, lm.device)
    state = {name[len(CLASSIFIER_PREFIX):]: value for name, value in tensors.items() if name.startswith(CLASSIFIER_PREFIX)}
    try:
        classifier.load_state_dict(state)
    except RuntimeError as error:
        raise KeditError(f"the SERAC artifact in {artifact.folder} does not fit the classifier {hparams.classifier!r} "
                         f"({str(error).splitlines()[0]}); retrain it") from None
    cf, fingerprint = counterfactual_start(lm, hparams)
    stored = tensors.get(CNTR_BASE_KEY)
    if stored is None or bytes(stored.tolist()).hex() != fingerprint:
        raise KeditError(f"the SERAC artifact in {artifact.folder} was trained from other counterfactual weights than "
                         f"{cf.source} ({fingerprint[:12]}); retrain it or name the model it was trained with")
    with torch.no_grad():
        for name, value in tensors.items():
            if name.startswith(COUNTERFACTUAL_PREFIX):
                cf.model.get_parameter(name[len(COUNTERFACTUAL_PREFIX):]).copy_(value.to(cf.device))
    digest = sha256_file(artifact.folder / MANIFEST_FILE)
    cf.fingerprint = hashlib.sha256(f"{fingerprint}|serac:{digest}".encode()).hexdigest()
    return SERACRuntime(classifier, cf, digest)


def runtime_for(lm: LoadedModel, artifact: Any, hparams: SERACHparams) -> SERACRuntime:
    """The runtime of ``artifact`` for ``lm``, built once per model (kept in ``lm.reuse``)."""
    digest = sha256_file(Path(artifact.folder) / MANIFEST_FILE)
    key = RUNTIME_KEY + digest
    if key not in lm.reuse:
        lm.reuse[key] = build_runtime(lm, artifact, hparams)
    return lm.reuse[key]


def locate_artifact(folder: str, digest: str) -> Any:
    """The artifact a saved edit was made with: its recorded folder, else a store entry with the same manifest."""
    from kedit.training.artifact import load_artifact, store_root

    candidates = [Path(folder)] + (sorted(store_root(METHOD).iterdir()) if store_root(METHOD).is_dir() else [])
    for candidate in candidates:
        manifest = candidate / MANIFEST_FILE
        if manifest.is_file() and sha256_file(manifest) == digest:
            return load_artifact(candidate, METHOD)
    raise KeditError(f"the SERAC editor this edit was made with (artifact {digest[:12]}, recorded in {folder}) is "
                     f"neither there nor in {store_root(METHOD)}; copy the artifact folder back")


# -------------------------------------------------------------------------------- router and edit kind


class MemoryRouter:
    """Routes each prompt in the scope of a memory entry to the counterfactual model (G.4, hard)."""

    def __init__(self, runtime: SERACRuntime, requests: Sequence[EditRequest], embeddings: torch.Tensor,
                 threshold: float) -> None:
        self.runtime = runtime
        self.requests = tuple(requests)
        self.embeddings = embeddings  # (m, d) float32, CPU
        self.threshold = threshold

    def scores(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per prompt, s = max_j sim_j (n,) and the entry j* (n,) (ties: the later entry)."""
        queries = self.runtime.embed(prompts)  # (n, d)
        with torch.no_grad():
            log_sims = self.runtime.classifier.log_similarity(queries, self.embeddings).float().cpu()  # (n, m)
        m = log_sims.shape[1]
        best = (m - 1) - log_sims.flip(1).argmax(dim=1)  # argmax takes the first maximum: the latest entry
        return log_sims.gather(1, best[:, None])[:, 0].exp(), best

    def __call__(self, prompts: Sequence[str]) -> list[tuple[LoadedModel, str] | None]:
        unique = list(dict.fromkeys(prompts))
        if not unique or not self.requests:
            return [None] * len(prompts)
        sims, best = self.scores(unique)
        decided = {}
        for prompt, sim, entry in zip(unique, sims.tolist(), best.tolist(), strict=True):
            decided[prompt] = ((self.runtime.counterfactual, counterfactual_text(self.requests[entry], prompt))
                               if sim > self.threshold else None)
        return [decided[prompt] for prompt in prompts]


@register_kind(MEMORY_KIND)
@dataclass(eq=False)
class SERACEdit:
    """An edit memory: ``apply`` installs a query router on the model, ``revert`` removes it.

    ``memory_embeddings`` (m, d) are the classifier's vectors of the requests' prompts, computed once.
    The trained editor (classifier + counterfactual) is found by ``artifact_digest`` (the sha256 of
    its manifest) in ``artifact_folder`` or the store, and built once per model. Memories do not
    stack (two routers would each answer with a part of the facts): edits kept one after another
    are :meth:`combine`-d into one memory over all their requests.
    """

    kind: ClassVar[str]
    stacks: ClassVar[bool] = False
    touches_parameters: ClassVar[bool] = False
    export_refusal: ClassVar[str | None] = (
        "changes no weight: a scope classifier sends in-scope prompts to a counterfactual model shown the stored "
        "edit, which a single model checkpoint cannot hold; save the edit (kedit edit --save DIR) and load it "
        "with kedit.load_edit")

    method: str
    requests: tuple[EditRequest, ...]
    hparams: Mapping[str, Any]
    memory_embeddings: torch.Tensor
    artifact_folder: str
    artifact_digest: str
    base_fingerprint: str
    info: dict[str, Any] = field(default_factory=dict)
    _installed: tuple[MemoryRouter, str] | None = field(default=None, repr=False)

    @property
    def is_applied(self) -> bool:
        return self._installed is not None

    @property
    def settings(self) -> SERACHparams:
        return SERACHparams(**self.hparams)

    def touches(self) -> tuple[str, ...]:
        return (MEMORY_KIND,)

    def changes(self) -> list[tuple[str, str]]:
        settings = self.settings
        return [(MEMORY_KIND, f"{len(self.requests)} memory entr{'y' if len(self.requests) == 1 else 'ies'}, "
                 f"classifier {settings.classifier}, counterfactual {settings.counterfactual or 'copy of the base'}, "
                 f"route above {settings.route_threshold}, editor {self.artifact_digest[:12]}")]

    def content_digest(self) -> str:
        """sha256 over the requests, settings, the trained editor and the memory embeddings."""
        digest = hashlib.sha256(json.dumps(
            [self.method, [r.to_dict() for r in self.requests], dict(self.hparams), self.artifact_digest],
            sort_keys=True, default=str).encode())
        digest.update(self.memory_embeddings.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def runtime(self, lm: LoadedModel) -> SERACRuntime:
        kept = lm.reuse.get(RUNTIME_KEY + self.artifact_digest)
        if kept is not None:
            return kept
        return runtime_for(lm, locate_artifact(self.artifact_folder, self.artifact_digest), self.settings)

    def apply(self, lm: LoadedModel) -> None:
        if self.is_applied:
            raise EditStateError(f"this {self.method} edit is already applied")
        check_base(self, lm)
        router = MemoryRouter(self.runtime(lm), self.requests, self.memory_embeddings, self.settings.route_threshold)
        digest = self.content_digest()
        lm.push_router(router, digest)
        self._installed = (router, digest)

    def revert(self, lm: LoadedModel) -> None:
        if self._installed is None:
            raise EditStateError(f"this {self.method} edit is not applied; nothing to revert")
        router, digest = self._installed
        lm.pop_router(router, digest)
        self._installed = None

    def manifest(self) -> dict[str, Any]:
        return manifest_of(self, artifact={"folder": self.artifact_folder, "digest": self.artifact_digest})

    def save(self, directory: str | Path) -> Path:
        """``memory.safetensors`` (the memory embeddings) and ``edit.json`` (requests, settings, editor)."""
        def write(folder: Path) -> None:
            save_file({"memory": self.memory_embeddings.contiguous()}, str(folder / MEMORY_FILE))

        return save_edit_files(directory, self.manifest(), write)

    @classmethod
    def load(cls, directory: str | Path) -> SERACEdit:
        directory = Path(directory)
        manifest = read_manifest(directory, MEMORY_KIND)
        check_files(directory, manifest)
        return cls(method=manifest["method"], requests=requests_of(manifest), hparams=manifest["hparams"],
                   memory_embeddings=load_file(str(directory / MEMORY_FILE))["memory"],
                   artifact_folder=manifest["artifact"]["folder"], artifact_digest=manifest["artifact"]["digest"],
                   base_fingerprint=manifest["base_fingerprint"], info=manifest.get("info", {}))

    @classmethod
    def combine(cls, edits: Sequence[SERACEdit]) -> SERACEdit:
        """One memory over every request of ``edits``, in order (same editor and settings)."""
        check_combinable(cls, edits)
        first = edits[0]
        for other in edits[1:]:
            if dict(other.hparams) != dict(first.hparams) or other.artifact_digest != first.artifact_digest:
                raise KeditError("cannot combine SERAC edits made with different settings or trained editors")
        return cls(method=first.method, requests=tuple(r for e in edits for r in e.requests),
                   hparams=dict(first.hparams), memory_embeddings=torch.cat([e.memory_embeddings for e in edits]),
                   artifact_folder=first.artifact_folder, artifact_digest=first.artifact_digest,
                   base_fingerprint=first.base_fingerprint,
                   info={"combined": len(edits), "steps": [dict(e.info) for e in edits]})


# ------------------------------------------------------------------------------------- hard negatives


HARD_NEG_FILE = "serac-hard-negatives-{digest}.safetensors"  # in the training folder (or the cache root)
HARD_NEG_EMBED_BATCH = 256  # prompts per forward of the frozen embedder (the reference encodes 256 at a time)
HARD_NEG_CHUNK = 1024  # rows of the (n, n) cosine matrix formed at once


def prompt_groups(prompts: Sequence[str]) -> torch.Tensor:
    """(n,) ids, equal exactly where two prompts are the same text up to case and spacing."""
    ids: dict[str, int] = {}
    return torch.tensor([ids.setdefault(_normalised(prompt), len(ids)) for prompt in prompts], dtype=torch.long)


def top_neighbours(similarity: torch.Tensor, rows: torch.Tensor, groups: torch.Tensor,
                   k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k most similar candidates of each row of ``similarity`` (r, n), row t belonging to prompt
    ``rows[t]``: (indices, sims), each (r, k), most similar first. A prompt is never its own
    neighbour, nor is any prompt in its group (the same text, :func:`prompt_groups`); where fewer
    than k candidates remain the row is padded with index -1 and sim −inf."""
    n = similarity.shape[1]
    masked = similarity.float().masked_fill(groups[rows].to(similarity.device)[:, None]
                                            == groups.to(similarity.device)[None, :], -math.inf)
    top = masked.topk(min(k, n), dim=1)  # sorted, most similar first
    indices = torch.full((len(rows), k), -1, dtype=torch.long)
    sims = torch.full((len(rows), k), -math.inf, dtype=torch.float32)
    found = torch.isfinite(top.values)
    indices[:, :top.indices.shape[1]] = torch.where(found, top.indices, -1).cpu()
    sims[:, :top.values.shape[1]] = top.values.cpu()
    return indices, sims


def neighbour_table(embeddings: torch.Tensor, groups: torch.Tensor, k: int,
                    chunk: int = HARD_NEG_CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`top_neighbours` of every prompt under the cosine of its unit vector (n, d) with every
    other, ``chunk`` rows at a time (the (n, n) matrix never exists at once)."""
    n = embeddings.shape[0]
    parts = [top_neighbours(embeddings[start:start + chunk] @ embeddings.T,
                            torch.arange(start, min(start + chunk, n)), groups, k) for start in range(0, n, chunk)]
    return torch.cat([part[0] for part in parts]), torch.cat([part[1] for part in parts])


@dataclass(frozen=True)
class HardNegatives:
    """Per training case, the band of neighbours a hard negative is drawn from and their weights.

    ``candidates[i]`` are the case indices at neighbour ranks ``exclude + 1 … neighbours`` of case
    i's prompt (rank 1 the most similar other prompt), ``cumulative[i]`` the running sums of
    exp((sim − sim_max) / T) over them — proportional to exp(sim / T), G.5's distribution."""

    candidates: tuple[tuple[int, ...], ...]
    cumulative: tuple[tuple[float, ...], ...]

    @classmethod
    def from_table(cls, indices: torch.Tensor, sims: torch.Tensor, exclude: int, temperature: float) -> HardNegatives:
        """From :func:`neighbour_table`'s (n, k) output: ranks ``exclude + 1 … k``, weights ∝ exp(sim / T)."""
        candidates, cumulative = [], []
        for row_indices, row_sims in zip(indices[:, exclude:].tolist(), sims[:, exclude:].double().tolist(),
                                         strict=True):
            band = [(index, sim) for index, sim in zip(row_indices, row_sims, strict=True) if index >= 0]
            top = max((sim for _, sim in band), default=0.0)
            running, sums = 0.0, []
            for _, sim in band:
                running += math.exp((sim - top) / temperature)
                sums.append(running)
            candidates.append(tuple(index for index, _ in band))
            cumulative.append(tuple(sums))
        return cls(tuple(candidates), tuple(cumulative))

    def draw(self, case: int, rng: random.Random) -> int | None:
        """A case index from case ``case``'s band, ∝ its weight, with one ``rng.random()``; None if the
        band is empty (then nothing is drawn)."""
        sums = self.cumulative[case]
        if not sums:
            return None
        position = bisect.bisect_right(sums, rng.random() * sums[-1])
        return self.candidates[case][min(position, len(sums) - 1)]


def load_sentence_embedder(name: str, device: torch.device | str = "cpu") -> MiniLMEmbedder:
    """The frozen encoder of the hard negatives: mean pooling + L2 normalisation, as sentence-transformers
    computes all-MiniLM-L6-v2's vectors (any BERT-like folder is read the same way)."""
    from transformers import AutoModel, AutoTokenizer

    folder = classifier_folder(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModel.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
    except OSError as error:
        raise KeditError(f"could not load the hard-negative embedder from {folder}: {error}") from error
    device = torch.device(device)
    model.to(device).eval()
    model.requires_grad_(False)
    return MiniLMEmbedder(model=model, tokenizer=tokenizer, device=device, batch_size=HARD_NEG_EMBED_BATCH,
                          name=str(folder))


def embedder_identity(name: str) -> str:
    """sha256 over the embedder folder's config and weight files: what the cached neighbours depend on."""
    folder = classifier_folder(name)
    files = sorted(path for path in folder.iterdir()
                   if path.name == "config.json" or path.suffix in (".safetensors", ".bin"))
    return hashlib.sha256(json.dumps([[path.name, sha256_file(path)] for path in files]).encode()).hexdigest()


def hard_negative_table(prompts: Sequence[str], hparams: SERACHparams, folder: Path,
                        device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, Path]:
    """:func:`neighbour_table` of the training prompts under the frozen embedder, computed once and kept in
    ``folder`` under a digest of (embedder weights, prompts, neighbours): a resumed run reads it back."""
    key = json.dumps({"embedder": embedder_identity(hparams.hard_neg_embedder), "pooling": "mean-l2",
                      "neighbours": hparams.hard_neg_neighbours, "prompts": list(prompts)})
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
    path = Path(folder) / HARD_NEG_FILE.format(digest=digest[:24])
    if path.is_file():
        stored = load_file(str(path))
        return stored["indices"], stored["sims"], path
    embedder = load_sentence_embedder(hparams.hard_neg_embedder, device)
    embeddings = embedder.embed(prompts).to(device)  # (n, d), unit rows
    indices, sims = neighbour_table(embeddings, prompt_groups(prompts).to(device), hparams.hard_neg_neighbours)
    del embedder, embeddings
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({"indices": indices.contiguous(), "sims": sims.contiguous()}, str(tmp))
    return indices, sims, path


SUBJECT_NEG_FILE = "serac-templates-{digest}.safetensors"  # in the training folder (or the cache root)
SUBJECT_NEG_DRAWS = 50  # draws of another case's template before a case falls back to its ordinary negative
TEMPLATE_FILLER = "something"  # stands for the subject in the templates the frozen encoder compares


def relation_template(request: EditRequest) -> str | None:
    """The question with its subject taken out (``"Which family does something belong to?"``), which the
    frozen encoder compares to tell relations apart; None when the prompt does not hold its subject."""
    return request.prompt.replace(SUBJECT_SLOT, TEMPLATE_FILLER) if SUBJECT_SLOT in request.prompt else None


def template_embeddings(templates: Sequence[str], hparams: SERACHparams, folder: Path,
                        device: torch.device | str = "cpu") -> torch.Tensor:
    """(n, d) unit frozen-encoder vectors of ``templates``, computed once and kept in ``folder`` under a
    digest of (embedder weights, templates): a resumed run reads them back."""
    key = json.dumps({"embedder": embedder_identity(hparams.hard_neg_embedder), "pooling": "mean-l2",
                      "templates": list(templates)})
    path = Path(folder) / SUBJECT_NEG_FILE.format(digest=hashlib.sha256(key.encode("utf-8")).hexdigest()[:24])
    if path.is_file():
        return load_file(str(path))["embeddings"]
    embedder = load_sentence_embedder(hparams.hard_neg_embedder, device)
    embeddings = embedder.embed(list(templates)).float().cpu()  # (n, d)
    del embedder
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({"embeddings": embeddings.contiguous()}, str(tmp))
    return embeddings


@dataclass(frozen=True)
class SubjectNegatives:
    """Negatives that share the memory entry's subject and ask another relation.

    SERAC's paper trains the scope classifier with rephrases as positives and unrelated questions (or,
    with hard negatives, the same relation about another subject) as negatives: nothing teaches it that
    a question about the entry's subject but another relation is out of scope, and on KnowEdit's ZsRE
    locality prompts (same subject, other relation) it routes them all. A subject negative of case i is
    case j's question with i's subject put in, for a j whose subject-free template is far from i's under
    the frozen encoder (cosine below ``max_cos``: another relation, not a paraphrase of i's question).
    """

    requests: tuple[EditRequest, ...]
    embeddings: torch.Tensor  # (n, d) unit rows; a zero row for a prompt without its subject
    usable: tuple[bool, ...]  # the prompt holds its subject, so its template can take another subject
    max_cos: float

    def draw(self, case: int, rng: random.Random) -> str | None:
        """Case ``case``'s subject in another relation's question, or None (after SUBJECT_NEG_DRAWS tries)."""
        n = len(self.requests)
        if not self.usable[case] or n < 2:
            return None
        own = self.requests[case]
        for _ in range(SUBJECT_NEG_DRAWS):
            other = rng.randrange(n)
            if other == case or not self.usable[other]:
                continue
            if float(self.embeddings[case] @ self.embeddings[other]) < self.max_cos:
                text = self.requests[other].prompt.replace(SUBJECT_SLOT, own.subject)
                if _normalised(text) != _normalised(own.text):
                    return text
        return None

    @classmethod
    def build(cls, requests: Sequence[EditRequest], hparams: SERACHparams, folder: Path,
              device: torch.device | str = "cpu") -> SubjectNegatives:
        templates = [relation_template(request) for request in requests]
        usable = tuple(template is not None for template in templates)
        texts = [template for template in templates if template is not None]
        vectors = template_embeddings(texts, hparams, folder, device) if texts else torch.zeros(0, 1)
        embeddings = torch.zeros(len(requests), vectors.shape[1])
        embeddings[torch.tensor(usable, dtype=torch.bool)] = vectors
        return cls(tuple(requests), embeddings, usable, hparams.subject_neg_max_cos)


# ---------------------------------------------------------------------------------------------- training


@dataclass(frozen=True)
class Example:
    """One training or validation case as SERAC reads it."""

    request: EditRequest  # the memory entry
    positive: str  # a query in its scope (a rephrase)
    negative: str  # a query out of its scope (a locality prompt, or another case's prompt)
    hard: bool = False  # the negative is a hard negative (a neighbour of the prompt, G.5 data.hard_neg)
    subject: bool = False  # the negative is a subject negative (the entry's subject, another relation)


@dataclass(frozen=True)
class LossTerms:
    total: torch.Tensor  # cedit L_edit' + cloc L_cls
    edit: EditTerms
    cls: torch.Tensor  # L_cls
    positive: torch.Tensor  # (n,) log-sims of the positive pairs
    negative: torch.Tensor  # (n,) log-sims of the negative pairs (up to n² with all_negatives)


def _normalised(text: str) -> str:
    return " ".join(text.lower().split())


class SERACTrainee:
    """The classifier and the counterfactual model under training, with their optimiser (a
    :class:`kedit.training.Trainee`)."""

    def __init__(self, lm: LoadedModel, cases: Sequence[Case], val_cases: Sequence[Case], hparams: SERACHparams,
                 cache_folder: str | Path | None = None) -> None:
        if len(cases) < 2 and not any(case.locality for case in cases):
            raise KeditError("SERAC training needs negatives: at least two training cases or locality prompts")
        if hparams.hard_neg_prob > 0 and len(cases) <= hparams.hard_neg_neighbours:
            raise KeditError(f"hard negatives are drawn from the {hparams.hard_neg_neighbours} nearest other training "
                             f"prompts, but there are {len(cases)} training cases: lower hard_neg_neighbours (and "
                             "hard_neg_exclude) or turn them off with hard_neg_prob=0")
        self.hparams = hparams
        self.cases = tuple(cases)
        self.device = lm.device
        # where the neighbour table is kept: the training folder (SERAC.train), else the cache root
        self.cache_folder = Path(cache_folder) if cache_folder is not None else None
        self._hard_negatives: HardNegatives | None = None
        self._subject_negatives: SubjectNegatives | None = None
        self._val_subject_negatives: SubjectNegatives | None = None
        self.val_cases = tuple(val_cases)[:hparams.val_cases]
        self.classifier = load_classifier(hparams, lm.device)
        self.counterfactual, self.cntr_base = counterfactual_start(lm, hparams)
        names = trainable_names(self.counterfactual.model, self.counterfactual.anatomy.block_paths, hparams.cntr_layers)
        self.cntr_params = {name: self.counterfactual.model.get_parameter(name) for name in names}
        for parameter in self.cntr_params.values():
            parameter.requires_grad_(True)
        encoder_params = [p for p in self.classifier.encoder.parameters()]
        for parameter in [*encoder_params, self.classifier.log_scale]:
            parameter.requires_grad_(True)
        groups = [{"params": encoder_params + list(self.cntr_params.values())},
                  {"params": [self.classifier.log_scale], "lr": hparams.scale_lr or hparams.lr}]
        self.optimizer = torch.optim.Adam(groups, lr=hparams.lr)

    @property
    def parameters(self) -> list[nn.Parameter]:
        return [*self.classifier.encoder.parameters(), self.classifier.log_scale, *self.cntr_params.values()]

    # -- examples

    @property
    def hard_negatives(self) -> HardNegatives:
        """The neighbour bands of the training prompts: computed (or read from the cache) on first use,
        which :meth:`SERAC.train` makes before the first step."""
        if self._hard_negatives is None:
            hp = self.hparams
            folder = self.cache_folder if self.cache_folder is not None else cache_dir("serac-hard-negatives")
            indices, sims, _ = hard_negative_table([case.request.text for case in self.cases], hp, folder,
                                                   self.device)
            self._hard_negatives = HardNegatives.from_table(indices, sims, hp.hard_neg_exclude,
                                                            hp.hard_neg_temperature)
        return self._hard_negatives

    @property
    def subject_negatives(self) -> SubjectNegatives:
        """The subject-free templates of the training and validation prompts under the frozen encoder
        (computed, or read from the cache, on first use). Validation cases draw only among themselves."""
        if self._subject_negatives is None:
            folder = self.cache_folder if self.cache_folder is not None else cache_dir("serac-hard-negatives")
            self._subject_negatives = SubjectNegatives.build([case.request for case in self.cases], self.hparams,
                                                             folder, self.device)
        return self._subject_negatives

    def validation_subject_examples(self) -> list[Example]:
        """One subject negative per validation case, drawn among the validation cases with a fixed seed
        (the same ones at every validation): how often a question about the entry's subject but another
        relation is kept away from the memory."""
        if self._val_subject_negatives is None:
            folder = self.cache_folder if self.cache_folder is not None else cache_dir("serac-hard-negatives")
            self._val_subject_negatives = SubjectNegatives.build([case.request for case in self.val_cases],
                                                                 self.hparams, folder, self.device)
        rng = random.Random(f"{self.hparams.seed}:validation-subject")
        examples = []
        for index, case in enumerate(self.val_cases):
            text = self._val_subject_negatives.draw(index, rng)
            if text is not None:
                positive = case.rephrases[0] if case.rephrases else case.request.text
                examples.append(Example(case.request, positive, text, subject=True))
        return examples

    def prepare(self) -> None:
        """Build everything a step reads besides (seed, step): the hard-negative table and the subject
        negatives' templates when they are on."""
        if self.hparams.hard_neg_prob > 0:
            _ = self.hard_negatives
        if self.hparams.subject_neg_prob > 0:
            _ = self.subject_negatives

    def _example(self, index: int, rng: random.Random, hard: bool = False) -> Example:
        case = self.cases[index]
        positive = rng.choice(case.rephrases) if case.rephrases else case.request.text
        if self.hparams.subject_neg_prob > 0 and rng.random() < self.hparams.subject_neg_prob:
            text = self.subject_negatives.draw(index, rng)
            if text is not None:
                return Example(case.request, positive, text, subject=True)
        if hard:
            other = self.hard_negatives.draw(index, rng)
            if other is not None:
                return Example(case.request, positive, self.cases[other].request.text, hard=True)
        if case.locality:
            return Example(case.request, positive, rng.choice(case.locality).prompt)
        own = _normalised(case.request.text)
        for _ in range(NEGATIVE_DRAWS):  # another training case's prompt, drawn uniformly
            other = self.cases[rng.randrange(len(self.cases))].request.text
            if _normalised(other) != own:
                return Example(case.request, positive, other)
        raise KeditError(f"training case {case.case_id or index} has no locality prompt and {NEGATIVE_DRAWS} draws "
                         "found no training case with another prompt: SERAC has no negative query for it")

    def training_examples(self, step: int) -> list[list[Example]]:
        """The micro-batches of step ``step``, drawn from (seed, step) only. Each micro-batch takes hard
        negatives with probability ``hard_neg_prob`` (one draw per micro-batch, as the reference's
        ``EditBatchSampler``; none is drawn when it is 0), else the ordinary ones."""
        hp = self.hparams
        rng = random.Random(f"{hp.seed}:{step}")
        size = min(hp.train_batch_size, len(self.cases))
        batches = []
        for _ in range(hp.accumulate_steps):
            indices = rng.sample(range(len(self.cases)), size)
            hard = hp.hard_neg_prob > 0 and rng.random() < hp.hard_neg_prob
            batches.append([self._example(index, rng, hard) for index in indices])
        return batches

    def validation_examples(self) -> list[Example]:
        cases = self.val_cases
        examples = []
        for index, case in enumerate(cases):
            positive = case.rephrases[0] if case.rephrases else case.request.text
            if case.locality:
                negative = case.locality[0].prompt
            else:
                others = [c.request.text for c in cases[index + 1:] + cases[:index]
                          if _normalised(c.request.text) != _normalised(case.request.text)]
                if not others:
                    continue
                negative = others[0]
            examples.append(Example(case.request, positive, negative))
        return examples

    # -- the objective

    def losses(self, examples: Sequence[Example], sss_coef: float | None = None) -> LossTerms:
        """L = cedit·L_edit' + cloc·L_cls on one micro-batch (``sss_coef`` overrides the hparams' C)."""
        hp = self.hparams
        sss_coef = hp.sss_coef if sss_coef is None else sss_coef
        n = len(examples)
        texts = ([e.request.text for e in examples] + [e.positive for e in examples]
                 + [e.negative for e in examples])
        vectors = self.classifier.embed(texts)  # (3n, d): memory keys, positives, negatives
        keys, positives, negatives = vectors[:n], vectors[n:2 * n], vectors[2 * n:]
        positive = self.classifier.paired_log_similarity(positives, keys)  # (n,)
        if hp.all_negatives:  # every (negative i, entry j) pair except a negative that is entry j's own prompt
            same = torch.tensor([[_normalised(e.negative) == _normalised(m.request.text) for m in examples]
                                 for e in examples], device=vectors.device)  # (n, n)
            negative = self.classifier.log_similarity(negatives, keys)[~same]  # (≤ n², )
        else:
            negative = self.classifier.paired_log_similarity(negatives, keys)  # (n,)
        cls = balanced_bce(positive, negative)
        pairs = [(counterfactual_text(e.request, e.positive), e.request.target_new) for e in examples]
        if self.cntr_params:
            edit = counterfactual_terms(self.counterfactual, pairs, sss_coef)
        else:  # a frozen counterfactual: L_cntr is measured, it has no gradient
            with torch.no_grad():
                edit = counterfactual_terms(self.counterfactual, pairs, 0.0)
        return LossTerms(hp.edit_coef * edit.edit + hp.loc_coef * cls, edit, cls, positive, negative)

    # -- the Trainee protocol

    def step(self, step: int) -> dict[str, float]:
        hp = self.hparams
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        batches = self.training_examples(step)
        for examples in batches:
            terms = self.losses(examples)
            (terms.total / len(batches)).backward()
            values = {"loss": terms.total, "l_cntr": terms.edit.cntr, "l_cls": terms.cls,
                      "hard_neg": torch.tensor(sum(e.hard for e in examples) / len(examples))}
            if hp.subject_neg_prob > 0:
                values["subject_neg"] = torch.tensor(sum(e.subject for e in examples) / len(examples))
            if terms.edit.sss is not None:
                values["sss"] = terms.edit.sss
            for name, value in values.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach()) / len(batches)
        norm = torch.nn.utils.clip_grad_norm_(self.parameters, hp.grad_clip)
        self.optimizer.step()
        return sums | {"grad_norm": float(norm), "scale": float(self.classifier.scale.detach())}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        hp = self.hparams
        examples = self.validation_examples()
        if not examples:
            raise KeditError("no validation case has a negative query (give locality prompts or several cases)")
        positives, negatives, nll, hits, tokens = [], [], 0.0, 0, 0
        for start in range(0, len(examples), hp.train_batch_size):
            terms = self.losses(examples[start:start + hp.train_batch_size], sss_coef=0.0)
            positives.append(terms.positive)
            negatives.append(terms.negative)
            nll += float(terms.edit.cntr) * terms.edit.tokens
            hits += terms.edit.hits
            tokens += terms.edit.tokens
        positive, negative = torch.cat(positives), torch.cat(negatives)
        cntr, cls = nll / max(tokens, 1), float(balanced_bce(positive, negative))
        pos_ok = (positive.exp() > hp.route_threshold).float()
        neg_ok = (negative.exp() <= hp.route_threshold).float()
        extra: dict[str, float] = {}
        if hp.subject_neg_prob > 0:  # reported beside val_loss, not in it: val_loss keeps the paper's definition
            subject = self.validation_subject_examples()
            if subject:
                keys = self.classifier.embed([e.request.text for e in subject])
                queries = self.classifier.embed([e.negative for e in subject])
                sims = self.classifier.paired_log_similarity(queries, keys).exp()
                extra["val_route_subject_acc"] = float((sims <= hp.route_threshold).float().mean())
        return extra | {"val_loss": hp.edit_coef * cntr + hp.loc_coef * cls, "val_l_cntr": cntr, "val_l_cls": cls,
                "val_route_pos_acc": float(pos_ok.mean()), "val_route_neg_acc": float(neg_ok.mean()),
                "val_route_acc": float(torch.cat([pos_ok, neg_ok]).mean()),
                "val_cntr_token_acc": hits / max(tokens, 1)}

    def state(self) -> dict[str, Any]:
        return {"classifier": self.classifier.state_dict(),
                "counterfactual": {name: p.detach() for name, p in self.cntr_params.items()},
                "optimizer": self.optimizer.state_dict()}

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.classifier.load_state_dict(state["classifier"])
        with torch.no_grad():
            for name, value in state["counterfactual"].items():
                self.cntr_params[name].copy_(value)
        self.optimizer.load_state_dict(state["optimizer"])

    def artifact_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {CLASSIFIER_PREFIX + name: value for name, value in self.classifier.state_dict().items()}
        tensors |= {COUNTERFACTUAL_PREFIX + name: p.detach() for name, p in self.cntr_params.items()}
        tensors[CNTR_BASE_KEY] = _fingerprint_tensor(self.cntr_base)
        return tensors


# ------------------------------------------------------------------------------------------------ method


@register(METHOD)
class SERAC:
    summary: ClassVar[str] = ("Memory-based editing: a trained scope classifier routes in-scope prompts to a "
                              "counterfactual model shown the stored edit; no weight changes (Mitchell et al. 2022)")
    hparams_class: ClassVar[type] = SERACHparams
    batch_capable: ClassVar[bool] = True
    editor_version: ClassVar[int] = EDITOR_VERSION

    def __init__(self) -> None:
        # resolved artifacts by (base fingerprint, training hparams, artifact=): finding one hashes every file
        # of every stored candidate, which a sequential run would otherwise repeat for each of its edits
        self._artifacts: dict[tuple[str, str, str | None], Any] = {}

    def default_hparams(self, lm: LoadedModel | None, user_file: str | Path | None = None,
                        overrides: Mapping[str, Any] | None = None) -> SERACHparams:
        from kedit.training.artifact import with_artifact_hparams

        return build_hparams(SERACHparams, lm, DEFAULTS_YAML, user_file, with_artifact_hparams(METHOD, overrides),
                             ALIASES)

    def training_hparams(self, hparams: SERACHparams) -> dict[str, Any]:
        """Every field except the edit-time ones (artifact, route_threshold, allow_training_overlap)."""
        values = asdict(hparams)
        for name in ("artifact", "route_threshold", "allow_training_overlap"):
            values.pop(name)
        values["classifier"] = _model_name(hparams.classifier)
        values["counterfactual"] = _model_name(hparams.counterfactual)
        values["hard_neg_embedder"] = _model_name(hparams.hard_neg_embedder)
        if hparams.subject_neg_prob == 0:
            # off, they shape nothing: left out, so editors trained before they existed keep their key
            values.pop("subject_neg_prob")
            values.pop("subject_neg_max_cos")
        return json.loads(json.dumps(values))

    def train(self, lm: LoadedModel, data: Any, hparams: SERACHparams, schedule: Any, out_dir: Path) -> Any:
        from kedit.training import train_editor

        self._artifacts.clear()  # the store is about to change
        trainee = SERACTrainee(lm, data.cases, data.val_cases, hparams, cache_folder=out_dir)
        trainee.prepare()  # the hard-negative table, before the first step (read back on a resume)
        artifact, _ = train_editor(lm, method=METHOD, editor_version=EDITOR_VERSION, trainee=trainee,
                                   training_hparams=self.training_hparams(hparams), data=data, schedule=schedule,
                                   out_dir=Path(out_dir))
        return artifact

    def trained_artifact(self, lm: LoadedModel, hparams: SERACHparams) -> Any:
        from kedit.training import resolve_artifact

        wanted = self.training_hparams(hparams)
        key = (lm.fingerprint, json.dumps(wanted, sort_keys=True), hparams.artifact)
        if key not in self._artifacts:
            self._artifacts[key] = resolve_artifact(METHOD, EDITOR_VERSION, lm.fingerprint, lm.source, wanted,
                                                    hparams.artifact)
        return self._artifacts[key]

    def compute(self, lm: LoadedModel, requests: Sequence[EditRequest], hparams: SERACHparams) -> SERACEdit:
        if not requests:
            raise KeditError("SERAC needs at least one request")
        artifact = self.trained_artifact(lm, hparams)
        runtime = runtime_for(lm, artifact, hparams)
        embeddings = runtime.embed([request.text for request in requests])  # (m, d)
        return SERACEdit(method=METHOD, requests=tuple(requests), hparams=asdict(hparams), memory_embeddings=embeddings,
                         artifact_folder=str(artifact.folder), artifact_digest=runtime.artifact_digest,
                         base_fingerprint=lm.fingerprint, info={"model": lm.source, "artifact": str(artifact.folder)})
