"""The edit ledger: an ordered chain of weight edits on one base model.

Round trip (append, apply, revert, export), refusal of a different model or of an edit not computed
on the head, tamper and truncation detection, consistency after interrupted writes, bit-exact revert
of the last entry, and the rule for an earlier entry (refused; --force only with disjoint
parameters, and then exact). CLI tests run ROME on a tiny model saved as a Hugging Face folder.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from typer.testing import CliRunner

import kedit.ledger.storage as storage
from kedit.cli import app
from kedit.edits import DELTAS_FILE, WeightEdit
from kedit.ledger import ENTRIES_DIR, ENTRY_FILE, INDEX_FILE, Ledger, LedgerError, export_merged
from kedit.models import load_model, weights_fingerprint
from kedit.requests import EditRequest
from tests.tiny_models import save_tiny_folder

REQUEST = EditRequest("The mother tongue of {} is", "Danielle Darrieux", "English", target_true="French")
runner = CliRunner()


def _snapshot(lm) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in lm.model.state_dict().items()}


def _assert_state(lm, expected: dict[str, torch.Tensor]) -> None:
    state = lm.model.state_dict()
    assert state.keys() == expected.keys()
    for name, tensor in state.items():
        assert torch.equal(tensor, expected[name]), f"{name} differs"


def _edit(lm, layers: tuple[int, ...], seed: int, scale: float = 0.05) -> WeightEdit:
    """A weight edit with random deltas on the MLP output projections of ``layers``."""
    generator = torch.Generator().manual_seed(seed)
    deltas = {}
    for layer in layers:
        name = lm.anatomy.mlp_out_weight(layer)
        deltas[name] = torch.randn(lm.parameter(name).shape, generator=generator) * scale
    return WeightEdit(method="random", requests=(REQUEST,), hparams={"seed": seed}, deltas=deltas,
                      base_fingerprint=lm.fingerprint)


@pytest.fixture
def chain(make_lm, tmp_path):
    """A ledger with three entries (layers 0, 1, 0) and the model state after each."""
    lm = make_lm("llama")
    book = Ledger.open(tmp_path / "ledger", create=True)
    states = [_snapshot(lm)]
    for layers, seed in (((0,), 1), ((1,), 2), ((0,), 3)):
        edit = _edit(lm, layers, seed)
        edit.apply(lm)  # computed on the head, applied, then appended (as kedit edit --ledger does)
        book.append(edit, lm)
        states.append(_snapshot(lm))
    return book, states


def test_append_apply_reproduces_each_state_bit_for_bit(chain, make_lm):
    book, states = chain
    assert [link.id for link in book.entries] == ["e0001", "e0002", "e0003"]
    assert [link.parent for link in book.entries] == [None, "e0001", "e0002"]
    assert book.entries[1].state_fingerprint == book.entries[0].result_fingerprint

    fresh = make_lm("llama")
    applied = book.apply(fresh)
    _assert_state(fresh, states[3])
    name = fresh.anatomy.mlp_out_weight(0)  # changed by e0001 and e0003: additions in chain order
    d1, d3 = book.load_edit("e0001").deltas[name], book.load_edit("e0003").deltas[name]
    assert torch.equal(fresh.parameter(name), (states[0][name] + d1) + d3)
    applied.revert()
    _assert_state(fresh, states[0])

    reopened = Ledger.open(book.root)
    assert reopened.index == book.index
    reopened.apply(fresh, upto="2")
    _assert_state(fresh, states[2])
    assert weights_fingerprint(fresh.model) == book.entries[1].result_fingerprint


def test_revert_last_is_exact_and_ids_are_never_reused(chain, make_lm):
    book, states = chain
    outcome = book.revert("last")
    assert outcome.removed == "e0003" and outcome.head == "e0002" and outcome.rebased == ()
    assert not (book.root / ENTRIES_DIR / "e0003").exists()
    fresh = make_lm("llama")
    book.apply(fresh)
    _assert_state(fresh, states[2])

    edit = _edit(fresh, (2,), seed=9)
    book.append(edit, fresh)  # not applied: the ledger applies it only to fingerprint the result
    _assert_state(fresh, states[2])
    assert book.entries[-1].id == "e0004"
    for reference in ("e0004", "e0002", "e0001"):
        book.revert(reference)
    assert book.entries == ()
    assert Ledger.open(book.root).index.head_fingerprint == fresh.fingerprint
    base = make_lm("llama")
    assert book.apply(base).ids == ()  # an empty chain applies to the base model and changes nothing
    _assert_state(base, states[0])


def test_revert_of_an_earlier_entry(chain, make_lm):
    book, states = chain
    with pytest.raises(LedgerError, match=r"not the last entry, and e0002, e0003 were computed"):
        book.revert("e0001")
    # e0003 changes the same parameter as e0001: no exact removal exists even with --force
    with pytest.raises(LedgerError, match=r"even with --force.*e0003 changes model.layers.0.mlp.down_proj.weight"):
        book.revert("e0001", force=True, lm=make_lm("llama"))
    with pytest.raises(LedgerError, match="needs the base model"):
        book.revert("e0002", force=True)
    assert [link.id for link in Ledger.open(book.root).entries] == ["e0001", "e0002", "e0003"]

    outcome = book.revert("e0002", force=True, lm=make_lm("llama"))  # e0003 touches layer 0 only
    assert outcome.rebased == ("e0003",)
    [first, third] = book.entries
    assert third.parent == "e0001" and third.rebased_over == ("e0002",)
    assert book.manifest("e0003").parent == "e0002"  # the entry's own record keeps its history

    fresh = make_lm("llama")
    book.apply(fresh)  # checks the recomputed fingerprint
    layer1 = fresh.anatomy.mlp_out_weight(1)
    expected = dict(states[3]) | {layer1: states[1][layer1]}  # e0002's parameter back where it was
    _assert_state(fresh, expected)
    assert not torch.equal(states[3][layer1], states[1][layer1])


def test_a_different_model_or_a_stale_state_is_refused(chain, make_lm):
    book, _ = chain
    other = make_lm("llama", seed=1)
    before = _snapshot(other)
    with pytest.raises(LedgerError, match="refusing: this ledger's edits were made on base model"):
        book.apply(other)
    _assert_state(other, before)
    with pytest.raises(LedgerError, match="base model"):
        book.append(_edit(other, (1,), seed=5), other)

    base = make_lm("llama")
    stray = _edit(base, (2,), seed=6)
    stray.apply(base)
    with pytest.raises(LedgerError, match="changed since it was loaded"):
        book.apply(base)
    stray.revert(base)
    # computed on the base model, but the ledger's head is after e0003
    with pytest.raises(LedgerError, match="computed on the base model, but the ledger's head is the state after e0003"):
        book.append(_edit(base, (2,), seed=7), base)
    book.apply(base, upto="e0001")
    with pytest.raises(LedgerError, match="computed on the state after entry e0001"):
        book.append(_edit(base, (2,), seed=8), base)
    assert [link.id for link in Ledger.open(book.root).entries] == ["e0001", "e0002", "e0003"]


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_delta_is_detected_by_its_hash(chain, make_lm, damage):
    book, states = chain
    deltas = book.root / ENTRIES_DIR / "e0002" / DELTAS_FILE
    data = bytearray(deltas.read_bytes())
    if damage == "flip":
        data[-5] ^= 0x10  # one bit of one weight
    else:
        data = data[: len(data) // 2]
    deltas.write_bytes(bytes(data))

    assert book.file_problems("e0002") == [f"{DELTAS_FILE} does not match its sha256 (tampered or truncated)"]
    assert book.file_problems("e0001") == []
    fresh = make_lm("llama")
    with pytest.raises(LedgerError, match="entry e0002 is damaged"):
        book.apply(fresh)
    _assert_state(fresh, states[0])  # nothing applied: every file is checked first


def test_a_changed_entry_record_makes_the_ledger_refuse_to_open(chain):
    book, _ = chain
    record = book.root / ENTRIES_DIR / "e0001" / ENTRY_FILE
    record.write_text(record.read_text().replace('"random"', '"rome"'))
    with pytest.raises(LedgerError, match="entry e0001: .* does not match the sha256 in ledger.json"):
        Ledger.open(book.root)


def test_a_replay_that_misses_the_recorded_fingerprint_restores_the_model(chain, make_lm, monkeypatch):
    book, states = chain
    real = storage.apply_in_order

    def different_arithmetic(lm, ids, edits, fingerprint_each=False):
        applied = real(lm, ids, edits, fingerprint_each)
        lm.parameter(lm.anatomy.mlp_out_weight(0)).data[0, 0] += 1e-3
        return applied

    monkeypatch.setattr(storage, "apply_in_order", different_arithmetic)
    fresh = make_lm("llama")
    with pytest.raises(LedgerError, match="the ledger recorded .* the model was left unedited"):
        book.apply(fresh)
    _assert_state(fresh, states[0])


def test_an_interrupted_append_leaves_the_ledger_consistent(chain, make_lm, monkeypatch):
    book, states = chain
    fresh = make_lm("llama")
    book.apply(fresh)
    edit = _edit(fresh, (2,), seed=11)

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash")

    # 1. killed while the entry folder is being built: atomic_path removes the half-built folder
    with monkeypatch.context() as patch:
        patch.setattr(storage, "sha256_file", crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            book.append(edit, fresh)
    assert Ledger.open(book.root).leftovers() == []

    # 2. killed after the folder was written, before the index was: the folder is a leftover
    with monkeypatch.context() as patch:
        patch.setattr(storage, "write_json_atomic", crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            book.append(edit, fresh)
    reopened = Ledger.open(book.root)
    assert [link.id for link in reopened.entries] == ["e0001", "e0002", "e0003"]
    assert reopened.leftovers() == [book.root / ENTRIES_DIR / "e0004"]
    # a process killed outright leaves atomic_path's temporaries too
    (book.root / ENTRIES_DIR / ".e0004.x1y2.tmp").mkdir()
    (book.root / f".{INDEX_FILE}.a1b2.tmp").mkdir()
    other = make_lm("llama")
    reopened.apply(other)  # leftovers are ignored: the chain is the index's
    _assert_state(other, states[3])
    assert reopened.clean() == [f".{INDEX_FILE}.a1b2.tmp", f"{ENTRIES_DIR}/.e0004.x1y2.tmp", f"{ENTRIES_DIR}/e0004"]
    assert reopened.leftovers() == []

    link = reopened.append(edit, fresh)  # the next append works and reuses the unclaimed number
    assert link.id == "e0004" and link.state_fingerprint == reopened.entries[2].result_fingerprint


def test_an_interrupted_revert_leaves_the_ledger_consistent(chain, make_lm, monkeypatch):
    book, states = chain

    def crash(self, paths):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(Ledger, "_remove", crash)  # after the index is written, before the folder goes
    with pytest.raises(RuntimeError, match="simulated crash"):
        book.revert("last")
    monkeypatch.undo()
    reopened = Ledger.open(book.root)
    assert [link.id for link in reopened.entries] == ["e0001", "e0002"]
    assert reopened.leftovers() == [book.root / ENTRIES_DIR / "e0003"]
    fresh = make_lm("llama")
    reopened.apply(fresh)
    _assert_state(fresh, states[2])


EXPORT_CHECK = textwrap.dedent("""
    import sys
    sys.modules["kedit"] = None  # importing kedit now fails: the folder must load without it
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    torch.set_num_threads(1)
    folder, prompt, out = sys.argv[1:]
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    ids = AutoTokenizer.from_pretrained(folder)(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        torch.save(model(ids).logits, out)
""")


def test_export_loads_in_plain_transformers_with_the_edited_logits(chain, make_lm, tmp_path):
    book, states = chain
    lm = make_lm("llama")
    prompt = "The Eiffel Tower is located in the city of"
    ids = lm.tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        base_logits = lm.model(ids).logits
    out = tmp_path / "merged"
    result = export_merged(book, lm, out)
    _assert_state(lm, states[0])  # the model is left unedited
    assert result.entries == ("e0001", "e0002", "e0003")
    assert result.fingerprint == book.index.head_fingerprint
    assert json.loads((out / "kedit-ledger.json").read_text())["fingerprint"] == result.fingerprint

    book.apply(lm)
    with torch.no_grad():
        edited_logits = lm.model(ids).logits
    logits_file = tmp_path / "logits.pt"
    subprocess.run([sys.executable, "-c", EXPORT_CHECK, str(out), prompt, str(logits_file)],
                   check=True, capture_output=True, cwd=tmp_path, timeout=300)
    exported_logits = torch.load(logits_file)
    torch.testing.assert_close(exported_logits, edited_logits, rtol=0, atol=1e-5)
    assert (exported_logits - base_logits).abs().max() > 1e-2  # the edits are visible in the export

    assert load_model(str(out)).fingerprint == book.index.head_fingerprint  # the weights, bit for bit
    with pytest.raises(LedgerError, match="is not an empty folder"):
        export_merged(book, make_lm("llama"), out)


# ------------------------------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory):
    """Two tiny Llama models saved as Hugging Face folders (same shapes, different weights)."""
    return [save_tiny_folder(tmp_path_factory.mktemp(f"tiny-llama-{seed}"), seed=seed) for seed in (0, 1)]


def _edit_args(ledger, prompt, subject, target, *extra):
    return ["edit", "--ledger", str(ledger), "--prompt", prompt, "--subject", subject, "--target", target,
            "--json", "--set", "mom2_adjustment=false", "--set", "v_num_grad_steps=5",
            "--set", "context_template_length_params=[[3,2]]", *extra]


def test_cli_round_trip(tiny_folders, tmp_path):
    folder, _ = tiny_folders
    ledger = tmp_path / "ledger"
    first = runner.invoke(app, _edit_args(ledger, "The Eiffel Tower is located in the city of", "Eiffel Tower",
                                          "Rome", "--model", str(folder)))
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["ledger_entry"] == "e0001"
    # no --model: the ledger's base model is loaded, and the edit is computed on top of e0001
    second = runner.invoke(app, _edit_args(ledger, "Michael Jordan plays the sport of", "Michael Jordan", "football"))
    assert second.exit_code == 0, second.output
    assert json.loads(second.stdout)["ledger_entry"] == "e0002"
    book = Ledger.open(ledger)
    assert book.base.source == str(folder.resolve())
    assert book.entries[1].state_fingerprint == book.entries[0].result_fingerprint != book.base.fingerprint

    listed = runner.invoke(app, ["ledger", "list", "--ledger", str(ledger)])
    assert listed.exit_code == 0, listed.output
    assert "e0001" in listed.stdout and "Michael Jordan" in listed.stdout and "ok" in listed.stdout
    shown = runner.invoke(app, ["ledger", "show", "2", "--ledger", str(ledger)])
    assert shown.exit_code == 0, shown.output
    assert "rome" in shown.stdout and "down_proj" in shown.stdout and "parent: e0001" in shown.stdout
    applied = runner.invoke(app, ["ledger", "apply", "--ledger", str(ledger), "--prompt", "Michael Jordan plays the sport of"])
    assert applied.exit_code == 0, applied.output
    # rich wraps at 80 columns, so where the line breaks depends on the temporary folder's length
    assert "matches the ledger" in " ".join(applied.stdout.split())

    out = tmp_path / "merged"
    exported = runner.invoke(app, ["ledger", "export", "--ledger", str(ledger), "--out", str(out)])
    assert exported.exit_code == 0, exported.output
    assert load_model(str(out)).fingerprint == book.index.head_fingerprint

    refused = runner.invoke(app, ["ledger", "revert", "e0001", "--ledger", str(ledger)])
    assert refused.exit_code == 2 and "not the last entry" in refused.output
    reverted = runner.invoke(app, ["ledger", "revert", "last", "--ledger", str(ledger)])
    assert reverted.exit_code == 0, reverted.output
    assert [link.id for link in Ledger.open(ledger).entries] == ["e0001"]


def test_cli_refuses_another_model_and_reports_damage(tiny_folders, tmp_path, make_lm):
    folder, other = tiny_folders
    lm = load_model(str(folder))
    book = Ledger.open(tmp_path / "ledger", create=True)
    book.append(_edit(lm, (0,), seed=1), lm)

    result = runner.invoke(app, _edit_args(book.root, "The Eiffel Tower is located in the city of", "Eiffel Tower",
                                           "Rome", "--model", str(other)))
    assert result.exit_code == 2 and "refusing: this ledger's edits were made on base model" in result.output
    assert [link.id for link in Ledger.open(book.root).entries] == ["e0001"]

    deltas = book.root / ENTRIES_DIR / "e0001" / DELTAS_FILE
    deltas.write_bytes(deltas.read_bytes()[:-7])
    listed = runner.invoke(app, ["ledger", "list", "--ledger", str(book.root)])
    assert listed.exit_code == 1 and "damaged" in listed.output
    applied = runner.invoke(app, ["ledger", "apply", "--ledger", str(book.root)])
    assert applied.exit_code == 2 and "entry e0001 is damaged" in applied.output
