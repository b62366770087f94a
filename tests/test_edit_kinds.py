"""Edit kinds: every kind goes through the same machinery — the EditStack (sequential mode, the
runner, the pitfalls suite), the ledger (append, apply, revert, state fingerprints) and save/load
with sha256 checks; a kind that cannot be exported says why. A toy method and a toy module-swap
kind defined here, in the test file only, work everywhere without touching kedit's own files.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import ClassVar

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import kedit
from kedit.cli import app
from kedit.edits import EditStack, ModuleSwapEdit, WeightEdit, edit_kinds, register_swap_module, swap_of
from kedit.errors import EditStateError, KeditError
from kedit.evaluate.runner import run_bench
from kedit.ledger import Ledger, LedgerError, export_merged
from kedit.methods import load_edit
from kedit.methods.base import register
from kedit.methods.hparams import build_hparams
from kedit.methods.ike import IKE, IKEEdit
from kedit.models.scoring import score
from kedit.requests import Case, EditRequest
from tests.test_pitfalls_protocol import (
    PROMPTS,
    composite_record,
    parse_conflict_record,
    parse_round_record,
    round_record,
)

R1 = EditRequest("The mother tongue of {} is", "Danielle Darrieux", "English", target_true="French")
R2 = EditRequest("{} was a physicist who worked in", "Albert Einstein", "Tokyo", target_true="Berlin")
R3 = EditRequest("{} plays the sport of", "Lionel Messi", "tennis", target_true="football")


@dataclass
class HashEmbedder:
    """Any text gets a fixed pseudo-random unit vector (from its sha256): IKE retrieval without MiniLM."""

    name: str = "hash"

    def embed(self, texts):
        rows = []
        for text in texts:
            seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
            rows.append(torch.randn(16, generator=torch.Generator().manual_seed(seed)))
        return torch.nn.functional.normalize(torch.stack(rows), dim=-1)


def with_ike(lm):
    """``lm`` with the IKE instance kedit.edit reuses set to a hash embedder and no pool (k=0)."""
    lm.reuse["method:ike"] = IKE(embedder=HashEmbedder())
    return lm


def weights(lm) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in lm.model.state_dict().items()}


def assert_weights(lm, expected) -> None:
    for name, tensor in lm.model.state_dict().items():
        assert torch.equal(tensor, expected[name]), name


# ------------------------------------------------------------------------------- a toy method and kind


@dataclass(frozen=True)
class ToyHparams:
    layer: int = 1
    scale: float = 0.5


@register_swap_module("test-shifted-output")
class ShiftedOutput(nn.Module):
    """Wraps a module and adds a fixed vector to its output: the smallest module-swap edit."""

    def __init__(self, wrapped: nn.Module, shift: torch.Tensor) -> None:
        super().__init__()
        self.wrapped = wrapped
        self.shift = nn.Parameter(shift, requires_grad=False)

    def forward(self, *args, **kwargs):
        return self.wrapped(*args, **kwargs) + self.shift

    def swap_config(self):
        return {"width": int(self.shift.numel())}

    def swap_state(self):
        return {"shift": self.shift.detach()}

    @classmethod
    def rebuild(cls, config, state, replaced):
        assert state["shift"].numel() == config["width"]
        return cls(replaced, state["shift"].clone())


@register("test-swap")
class ToySwap:
    """Shifts layer ``layer``'s MLP output by a vector seeded by the requests: a module-swap method."""

    summary: ClassVar[str] = "test method returning module-swap edits"
    hparams_class: ClassVar[type] = ToyHparams
    batch_capable: ClassVar[bool] = True

    def default_hparams(self, lm, user_file=None, overrides=None) -> ToyHparams:
        return build_hparams(ToyHparams, lm, None, user_file, overrides)

    def compute(self, lm, requests, hparams: ToyHparams) -> ModuleSwapEdit:
        path = lm.anatomy.mlp_out_paths[hparams.layer]
        seed = int(hashlib.sha256("|".join(r.text for r in requests).encode()).hexdigest()[:8], 16)
        shift = torch.randn(lm.anatomy.hidden_size, generator=torch.Generator().manual_seed(seed)) * hparams.scale
        module = ShiftedOutput(lm.module(path), shift)
        return ModuleSwapEdit(method="test-swap", requests=tuple(requests), hparams=asdict(hparams),
                              swaps=(swap_of(path, module),), base_fingerprint=lm.fingerprint)


@register("test-scale")
class ToyScale:
    """Scales layer ``layer``'s MLP output weight by (1 + scale / n): a weight-delta method."""

    summary: ClassVar[str] = "test method returning weight deltas"
    hparams_class: ClassVar[type] = ToyHparams
    batch_capable: ClassVar[bool] = True

    def default_hparams(self, lm, user_file=None, overrides=None) -> ToyHparams:
        return build_hparams(ToyHparams, lm, None, user_file, overrides)

    def compute(self, lm, requests, hparams: ToyHparams) -> WeightEdit:
        name = lm.anatomy.mlp_out_weight(hparams.layer)
        delta = lm.parameter(name).detach() * hparams.scale / len(requests)
        return WeightEdit(method="test-scale", requests=tuple(requests), hparams=asdict(hparams),
                          deltas={name: delta.clone()}, base_fingerprint=lm.fingerprint)


# ---------------------------------------------------------------------------------------- the registry


def test_kinds_are_registered_with_what_they_can_do():
    kinds = edit_kinds()
    assert {"weight-deltas", "prompt-context", "module-swap"} <= set(kinds)
    assert kinds["weight-deltas"].export_refusal is None and kinds["weight-deltas"].stacks
    assert "prompt" in kinds["prompt-context"].export_refusal and not kinds["prompt-context"].stacks
    assert kinds["module-swap"].export_refusal and kinds["module-swap"].stacks


def test_an_unknown_kind_is_refused_with_the_known_ones(tmp_path, make_lm):
    lm = make_lm("llama")
    edit = kedit.edit(lm, "test-scale", R1, apply=False)
    folder = edit.save(tmp_path / "edit")
    manifest = (folder / "edit.json").read_text().replace('"weight-deltas"', '"no-such-kind"')
    (folder / "edit.json").write_text(manifest)
    with pytest.raises(KeditError, match="unknown edit kind 'no-such-kind'.*weight-deltas"):
        load_edit(folder)


# ---------------------------------------------------------------------------------------- module swap


def test_module_swap_changes_the_output_reverts_to_the_same_object_and_round_trips(make_lm, tmp_path):
    lm = make_lm("llama")
    before, original = weights(lm), lm.module(lm.anatomy.mlp_out_paths[1])
    pairs = [(R1.text, R1.target_new)]
    unedited = score(lm, pairs)
    edit = kedit.edit(lm, "test-swap", R1, apply=False)
    assert edit.kind == "module-swap" and edit.touches() == (lm.anatomy.mlp_out_paths[1],)

    edit.apply(lm)
    edited = score(lm, pairs)
    assert edited != unedited and lm.overlays == (edit.content_digest(),)
    edit.revert(lm)
    assert lm.module(lm.anatomy.mlp_out_paths[1]) is original and lm.overlays == ()
    assert_weights(lm, before)
    assert score(lm, pairs) == unedited

    loaded = load_edit(edit.save(tmp_path / "swap"))
    assert loaded.content_digest() == edit.content_digest()
    loaded.apply(lm)
    assert score(lm, pairs) == edited
    loaded.revert(lm)
    (tmp_path / "swap" / "modules.safetensors").write_bytes(b"truncated")
    with pytest.raises(KeditError, match="does not match the sha256"):
        load_edit(tmp_path / "swap")


def test_reverting_a_swap_under_a_later_one_is_refused(make_lm):
    lm = make_lm("llama")
    first = kedit.edit(lm, "test-swap", R1, apply=False)
    second = kedit.edit(lm, "test-swap", R2, apply=False)
    first.apply(lm)
    second.apply(lm)  # wraps the first one's module
    with pytest.raises(EditStateError, match="revert the later edits first"):
        first.revert(lm)
    second.revert(lm)
    first.revert(lm)


# ------------------------------------------------------------------------------ stack and sequential


def test_prompt_contexts_kept_on_a_stack_are_one_memory_not_concatenated(make_lm):
    lm = with_ike(make_lm("llama"))
    first = kedit.edit(lm, "ike", R1, apply=False, k=0)
    second = kedit.edit(lm, "ike", R2, apply=False, k=0)
    query = R2.text
    with EditStack(lm) as stack:
        stack.push(first)
        stack.push(second)
        assert len(lm.prompt_contexts) == 1 and len(stack) == 2
        installed = stack.layers[-1].installed
        assert isinstance(installed, IKEEdit) and installed.requests == (R1, R2)
        # the query about Einstein retrieves its own fact from the combined memory
        assert lm.in_context([query]) == [installed.contexts([query])[0] + query]
        assert stack.pop() is second
        assert lm.in_context([query]) == [first.contexts([query])[0] + query]
    assert lm.prompt_contexts == () and lm.overlays == ()
    stack.verify_restored()


@pytest.mark.parametrize("method", ["ike", "test-swap", "test-scale"])
def test_sequential_mode_gives_one_edit_equal_to_the_kept_steps(make_lm, method):
    lm = with_ike(make_lm("llama"))
    before = weights(lm)
    options = {"k": 0} if method == "ike" else {}
    steps = []
    with EditStack(lm) as stack:
        for request in (R1, R2, R3):  # each step computed on the model carrying the earlier ones
            steps.append(kedit.edit(lm, method, request, apply=False, **options))
            stack.push(steps[-1])
        kept = score(lm, [(r.text, r.target_new) for r in (R1, R2, R3)])
        kept_state = lm.state_fingerprint()
    result = kedit.edit(lm, method, [R1, R2, R3], mode="sequential", apply=False, **options)
    assert type(result).kind == type(steps[0]).kind and result.requests == (R1, R2, R3)
    assert_weights(lm, before)
    result.apply(lm)
    now = score(lm, [(r.text, r.target_new) for r in (R1, R2, R3)])
    if method == "test-scale":  # summed deltas: equal up to float rounding
        flat = [p for s in now for p in s.log_probs]
        assert flat == pytest.approx([p for s in kept for p in s.log_probs], abs=1e-4)
    else:
        assert now == kept
    if method == "ike":  # one memory either way: the same installed context, the same state
        assert lm.state_fingerprint() == kept_state
    result.revert(lm)
    assert_weights(lm, before)


@pytest.mark.parametrize("method", ["ike", "test-swap"])
def test_the_runner_runs_every_kind_sequentially_and_resumes(make_lm, tmp_path, method, monkeypatch):
    import kedit.methods.ike as ike_module

    # a resumed run loads its stored IKE edits, which load their embedder by name
    monkeypatch.setattr(ike_module, "load_embedder", lambda name, *args: HashEmbedder())
    lm = with_ike(make_lm("llama"))
    before = weights(lm)
    cases = [Case(request=r, rephrases=(r.text,)) for r in (R1, R2, R3)]
    overrides = {"k": 0} if method == "ike" else {}
    out = tmp_path / "run"
    summary = run_bench(lm, method, cases, mode="sequential:1", out_dir=out, overrides=overrides, progress=False)
    assert summary["cases"] == 3 and "post" in summary["token"]
    assert sorted(p.name for p in (out / "edits").iterdir()) == ["00000", "00001", "00002"]
    assert lm.prompt_contexts == () and lm.overlays == ()
    assert_weights(lm, before)
    results = (out / "results.jsonl").read_text()
    # resumed from the stored edits: replayed, not recomputed, and the same records
    again = run_bench(lm, method, cases, mode="sequential:1", out_dir=out, overrides=overrides, progress=False,
                      resume=True)
    assert (out / "results.jsonl").read_text() == results
    assert again["token"]["post"] == summary["token"]["post"]
    records = [json.loads(line) for line in results.splitlines()]
    assert [r["edit"]["unit"] for r in records] == [0, 1, 2]
    assert all(isinstance(r["edit"]["target_reached"], bool) for r in records)


# ------------------------------------------------------------------------------------------ pitfalls


def test_the_pitfalls_suite_runs_ike(make_lm):
    from kedit.pitfalls.conflict import MethodEditor, run_conflict_case
    from kedit.pitfalls.distortion import run_round_case

    lm = with_ike(make_lm("gpt2"))
    editor = MethodEditor("ike", overrides={"k": 0})
    conflict = run_conflict_case(lm, parse_conflict_record(0, composite_record()), PROMPTS, editor)
    assert conflict.log.edits["e1"]["kind"] == "prompt-context"
    # with e1 and e2 kept, e1's fact is still stated for its own prompt: the contexts form one memory
    states = conflict.probabilities
    assert set(states) >= {"theta", "theta_m", "theta_2"}
    assert states["theta_m"] != states["theta"] and states["theta_2"] != states["theta_m"]
    round_trip = run_round_case(lm, parse_round_record(0, round_record()), PROMPTS, editor)
    assert {edit["kind"] for edit in round_trip.log.edits.values()} == {"prompt-context"}
    # after e1 (o -> o*) the prompt context changes what the model says; after e2 it changes again
    assert round_trip.probabilities["theta_m"] != round_trip.probabilities["theta"]
    assert round_trip.probabilities["theta_2"] != round_trip.probabilities["theta_m"]
    assert lm.prompt_contexts == () and lm.overlays == ()


# -------------------------------------------------------------------------------------------- ledger


def test_ike_and_module_swaps_go_into_a_ledger_and_come_out_again(make_lm, tmp_path, monkeypatch):
    import kedit.methods.ike as ike_module

    monkeypatch.setattr(ike_module, "load_embedder", lambda name, *args: HashEmbedder())  # for the loaded entries
    lm = with_ike(make_lm("llama"))
    base_state = lm.state_fingerprint()
    book = Ledger.open(tmp_path / "ledger", create=True)
    states = []
    for method, request in (("ike", R1), ("ike", R3), ("test-scale", R2), ("test-swap", R1)):
        chain = book.apply(lm)
        edit = kedit.edit(lm, method, request, apply=False, **({"k": 0} if method == "ike" else {}))
        chain.stack.push(edit)
        link = book.append(edit, lm, chain)
        states.append(lm.state_fingerprint())
        assert link.result_fingerprint == states[-1]
        chain.revert()
        assert lm.state_fingerprint() == base_state
    assert [book.manifest(link.id).kind for link in book.entries] == [
        "prompt-context", "prompt-context", "weight-deltas", "module-swap"]
    assert len(set(states)) == 4  # every entry, weights or not, moves the chain to a new state

    fresh = with_ike(make_lm("llama"))
    chain = book.apply(fresh)
    assert fresh.state_fingerprint() == states[-1]
    assert len(fresh.prompt_contexts) == 1  # the two consecutive IKE entries are one memory
    chain.revert()
    assert fresh.state_fingerprint() == base_state

    with pytest.raises(LedgerError, match="cannot export a merged model: entry e0001 \\(ike, prompt-context\\)"):
        export_merged(book, fresh, tmp_path / "merged")
    with pytest.raises(LedgerError, match="refusing to revert e0001"):
        book.revert("e0001")
    book.revert("e0004")
    book.revert("e0003")
    chain = book.apply(fresh)
    assert fresh.state_fingerprint() == states[1] and len(fresh.prompt_contexts) == 1
    chain.revert()


def test_the_ledger_cli_lists_shows_and_reverts_an_ike_entry(tmp_path, tiny_folder):
    runner = CliRunner()
    ledger = tmp_path / "ledger"
    args = ["edit", "--model", str(tiny_folder), "--method", "ike", "--set", "k=0", "--prompt", R1.prompt,
            "--subject", R1.subject, "--target", R1.target_new, "--ledger", str(ledger), "--json"]
    added = runner.invoke(app, args)
    assert added.exit_code == 0, added.output
    listed = runner.invoke(app, ["ledger", "list", "--ledger", str(ledger)])
    assert listed.exit_code == 0 and "ike" in listed.output and "e0001" in listed.output
    shown = runner.invoke(app, ["ledger", "show", "e0001", "--ledger", str(ledger)])
    assert shown.exit_code == 0 and "1 fact(s), k=0" in shown.output
    exported = runner.invoke(app, ["ledger", "export", "--ledger", str(ledger), "--out", str(tmp_path / "merged")])
    assert exported.exit_code != 0 and "prompt-context" in exported.output
    reverted = runner.invoke(app, ["ledger", "revert", "e0001", "--ledger", str(ledger)])
    assert reverted.exit_code == 0, reverted.output
    assert Ledger.open(ledger).entries == ()


# --------------------------------------------------------------------------------------------- reuse


def test_kedit_edit_reuses_the_method_instance_of_a_model(make_lm):
    lm = with_ike(make_lm("llama"))
    method = lm.reuse["method:ike"]
    kedit.edit(lm, "ike", R1, apply=False, k=0)
    kedit.edit(lm, "ike", R2, apply=False, k=0)
    assert lm.reuse["method:ike"] is method
    other = make_lm("llama")
    assert "method:ike" not in other.reuse  # kept per model, not in a global
