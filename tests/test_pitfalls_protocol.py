"""The Pitfalls protocols (SPEC A.3, A.8, A.9), the data loaders (A.1) and the ``kedit pitfalls`` commands.

The protocol tests use a tiny random GPT-2 and a fake deterministic editor whose deltas are known,
so the test can tell which weights were in place whenever something was scored or edited.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zlib
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import kedit.pitfalls.probability as probability
from kedit.data.pitfalls import (
    load_conflict_edit,
    load_relation_prompts,
    load_round_edit,
    parse_conflict_record,
    parse_round_record,
)
from kedit.errors import DataError, EditStateError, KeditError, KeditWarning
from kedit.methods import WeightEdit
from kedit.methods.base import _REGISTRY, register
from kedit.models import weights_fingerprint
from kedit.models.scoring import score
from kedit.pitfalls.conflict import (
    NEW_EXPLICIT,
    NEW_IMPLICIT,
    OLD,
    THETA,
    THETA_2,
    THETA_E2,
    THETA_M,
    TIED,
    MethodEditor,
    run_conflict_case,
)
from kedit.pitfalls.distortion import INTERMEDIATE, TARGET, run_round_case

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PITFALLS = SHARED_DATA / "pitfalls" / "GPT2-XL"
EDITED = "transformer.h.1.mlp.c_proj.weight"  # the one matrix the fake editor changes (tiny GPT-2)
PROMPTS = {
    "P26": ["{} is married to", "The husband or wife of {} is"],
    "P22": ["The dad of {} is", "{} was fathered by"],
    "P25": ["The mum of {} is", "{} was born to"],
    "P800": ["{} is known for the work", "A famous work by {} is"],
    "P170": ["{} was made by", "The author of {} is"],
    "P69": ["{} studied at", "{} is an alumnus of"],
}


# ------------------------------------------------------------------------------------------ records


def _entity(label):
    return {"id": "Q" + str(zlib.crc32(label.encode()) % 1000), "label": label}


def _relation(relation_id, prompt):
    return {"id": relation_id, "prompt": prompt, "query": "unused?", "label": relation_id}


def _triple(relation, subject, obj):
    return {"relation": relation, "subject": _entity(subject), "object": _entity(obj)}


def _edit(relation, subject, obj, new):
    return {**_triple(relation, subject, obj), "new_object": _entity(new)}


SPOUSE, FATHER, MOTHER = (_relation("P26", "The spouse of {} is"), _relation("P22", "The father of {} is"),
                          _relation("P25", "The mother of {} is"))
WORK, CREATOR = _relation("P800", "The notable work of {} is"), _relation("P170", "The creator of {} is")


def composite_record():
    return {
        "rule": "P25&P26>P22",
        "triples": [_triple(MOTHER, "Maria Josepha", "Maria Theresa"), _triple(SPOUSE, "Maria Theresa", "Francis"),
                    _triple(FATHER, "Maria Josepha", "Francis")],
        "prerequisites": [0],
        "type": "composite",
        "edits": [_edit(SPOUSE, "Maria Theresa", "Francis", "Gena Rowlands"),
                  _edit(FATHER, "Maria Josepha", "Francis", "John Forbes")],
    }


def reverse_record():
    return {
        "rule": "P800>P170",
        "triples": [_triple(WORK, "Goya", "Second of May"), _triple(CREATOR, "Second of May", "Goya")],
        "prerequisites": [],
        "type": "reverse",
        "edits": [_edit(WORK, "Goya", "Second of May", "Fighting Bulls"),
                  _edit(CREATOR, "Fighting Bulls", "Goya", "Richard Strauss")],
    }


def coverage_record():
    return {
        "triples": [_triple(FATHER, "Anna Lee", "Tom")],
        "prerequisites": [],
        "type": "coverage",
        "edits": [_edit(FATHER, "Anna Lee", "Tom", "Paris Hilton"), _edit(FATHER, "Anna Lee", "Paris Hilton", "Rome")],
    }


def round_record(objects=("University of Paris", "Duarte High School")):
    return {
        "type": f"1-{len(objects)}@P69",
        "edit": {"relation": _relation("P69", "{} was educated at"), "subject": _entity("Cary Tagawa"),
                 "new_object": _entity("University of Rome"), "object": _entity("Duarte High School")},
        "true_objects": [_entity(label) for label in objects],
    }


def _write(path, payload):
    path.write_text(json.dumps(payload), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------ loaders


def test_conflict_loader_maps_the_facts_of_each_record_type():
    composite = parse_conflict_record(0, composite_record())
    assert (composite.first.subject, composite.first.target_true, composite.first.target_new) == (
        "Maria Theresa", "Francis", "Gena Rowlands")
    old, explicit, implicit, tied = (composite.old_fact, composite.new_fact_explicit, composite.new_fact_implicit,
                                     composite.tied_fact)
    assert (old.subject, old.relation_id, old.object) == ("Maria Theresa", "P26", "Gena Rowlands")
    assert (explicit.subject, explicit.relation_id, explicit.object) == ("Maria Josepha", "P22", "John Forbes")
    assert (implicit.subject, implicit.relation_id, implicit.object) == ("Maria Theresa", "P26", "John Forbes")
    assert (tied.subject, tied.relation_id, tied.object) == ("Maria Josepha", "P25", "Maria Theresa")

    reverse = parse_conflict_record(1, reverse_record())
    implicit = reverse.new_fact_implicit  # "the notable work of Richard Strauss is Fighting Bulls"
    assert (implicit.subject, implicit.relation_id, implicit.object) == ("Richard Strauss", "P800", "Fighting Bulls")
    assert reverse.tied_fact is None and reverse.case_id == "reverse-1"

    coverage = parse_conflict_record(2, coverage_record())
    assert coverage.new_fact_implicit is None
    assert coverage.second.request().target_true == "Paris Hilton"


def test_conflict_loader_reports_malformed_records_by_index_and_field(tmp_path):
    missing = composite_record()
    del missing["edits"][0]["new_object"]
    broken_invariant = coverage_record()
    broken_invariant["edits"][1]["object"] = _entity("Somebody Else")
    path = _write(tmp_path / "conflict.json", [reverse_record(), missing, coverage_record(), broken_invariant])

    with pytest.warns(UserWarning, match="skipped 2 malformed"):
        loaded = load_conflict_edit(path)
    assert [r.index for r in loaded.records] == [0, 2]
    assert [(p.index, p.field) for p in loaded.problems] == [(1, "edits[0].new_object"), (3, "edits[1].object.label")]
    assert loaded.records_read == 4 and loaded.cases == ()

    with pytest.raises(DataError, match=r"record 1: field 'edits\[0\]\.new_object': missing"):
        load_conflict_edit(path, strict=True)
    assert len(load_conflict_edit(path, limit=1, strict=True).records) == 1


def test_round_loader_others_keep_order_and_duplicates(tmp_path):
    record = parse_round_record(0, round_record(("A", "Duarte High School", "B", "Duarte High School")))
    assert record.others == ("A", "B", "Duarte High School")  # first o removed, the duplicate kept
    mle = record.multi_label_request()
    assert (mle.target_new, mle.target_true, mle.extra_targets) == (
        "Duarte High School", "University of Rome", ("A", "B", "Duarte High School"))
    first = record.first_request()
    assert (first.target_true, first.target_new) == ("Duarte High School", "University of Rome")

    no_target = round_record(("A", "B"))
    path = _write(tmp_path / "round.json", [round_record(), no_target, {"type": "1-2@P69"}])
    with pytest.warns(UserWarning):
        loaded = load_round_edit(path)
    assert [(p.index, p.field) for p in loaded.problems] == [(1, "true_objects"), (2, "edit")]
    with pytest.raises(DataError, match="record 1: field 'true_objects'"):
        load_round_edit(path, strict=True)


def test_loader_errors_for_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_conflict_edit(tmp_path / "nothing.json")
    with pytest.raises(DataError, match="expected a JSON list"):
        load_round_edit(_write(tmp_path / "dict.json", {"a": 1}))
    with pytest.raises(DataError, match=r"P1\[0\]"):
        load_relation_prompts(_write(tmp_path / "prompts.json", {"P1": ["no slot"]}))


def _real_data() -> Path:
    if not PITFALLS.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"the shared Pitfalls data is missing at {PITFALLS}")
        pytest.skip(f"shared Pitfalls data not found at {PITFALLS}")
    return PITFALLS


@pytest.mark.parametrize(("name", "count"), [("coverage_edit", 2500), ("reverse_edit", 2500),
                                             ("composite_edit", 2000)])
def test_real_conflict_files_load_completely(name, count):
    folder = _real_data()
    loaded = load_conflict_edit(folder / f"{name}.json", strict=True)
    prompts = load_relation_prompts(folder / "conflict_prompts.json")
    assert len(loaded.records) == count and not loaded.problems
    assert {r.kind for r in loaded.records} == {name.removesuffix("_edit")}
    relations = {f.relation_id for r in loaded.records for f in (r.first, r.second)}
    relations |= {r.tied_fact.relation_id for r in loaded.records if r.tied_fact is not None}
    assert relations <= set(prompts)
    assert all(len(templates) == 10 for templates in prompts.values())


@pytest.mark.parametrize("split", ["easy", "hard"])
def test_real_round_files_load_completely(split):
    folder = _real_data()
    loaded = load_round_edit(folder / f"{split}.json", strict=True)
    prompts = load_relation_prompts(folder / "round_prompts.json")
    assert len(loaded.records) == 2500 and not loaded.problems
    assert {r.relation_id for r in loaded.records} <= set(prompts)
    assert all(r.intermediate not in r.true_objects and 1 <= len(r.others) <= 9 for r in loaded.records)


def test_real_files_match_the_manifest():
    folder = _real_data()
    manifest = {entry["path"]: entry for entry in json.loads((SHARED_DATA / "MANIFEST.json").read_text())}
    for path in sorted(folder.glob("*.json")):
        entry = manifest[f"pitfalls/GPT2-XL/{path.name}"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"], path.name


# ----------------------------------------------------------------------------------------- protocol


class FakeEditor:
    """Deterministic edits of one matrix: the delta depends only on the request; every call is logged
    with the weights it saw."""

    def __init__(self, fail_on_call: int | None = None):
        self.calls: list[tuple[tuple, torch.Tensor]] = []
        self.fail_on_call = fail_on_call

    @staticmethod
    def delta(lm, request) -> torch.Tensor:
        key = "|".join((request.subject, request.target_new, *request.extra_targets))
        generator = torch.Generator().manual_seed(zlib.crc32(key.encode()))
        shape = lm.parameter(EDITED).shape
        return torch.randn(shape, generator=generator) * 0.3

    def __call__(self, lm, requests):
        self.calls.append((tuple(requests), lm.parameter(EDITED).detach().clone()))
        if self.fail_on_call == len(self.calls):
            raise KeditError("the fake editor fails here")
        [request] = requests
        return WeightEdit("fake", tuple(requests), {}, {EDITED: self.delta(lm, request)}, lm.fingerprint)


class ScoreSpy:
    """Wraps the real score(): logs which weights were in place and which pairs were scored."""

    def __init__(self, lm, states: dict[str, torch.Tensor]):
        self.lm, self.states, self.log = lm, states, []

    def __call__(self, lm, pairs, *args, **kwargs):
        current = lm.parameter(EDITED)
        names = [name for name, weights in self.states.items() if torch.equal(current, weights)]
        assert len(names) == 1, "scored on weights that are none of the expected states"
        self.log.append((names[0], list(pairs)))
        return score(lm, pairs, *args, **kwargs)


def _prompt_set(fact_prompt, relation_id, subject):
    return [t.replace("{}", subject) for t in [fact_prompt, *PROMPTS[relation_id]]]


def _expected_pairs(facts):
    return [(prompt, target) for prompt_set, target in facts for prompt in prompt_set]


def _fact_value(lm, prompts, target):
    scored = score(lm, [(p, target) for p in prompts])
    return sum(s.geometric_mean_prob for s in scored) / len(scored)


def test_composite_protocol_scores_the_right_facts_at_the_right_states(make_lm, monkeypatch):
    lm = make_lm("gpt2")
    record = parse_conflict_record(0, composite_record())
    w0 = lm.parameter(EDITED).detach().clone()
    d1 = FakeEditor.delta(lm, record.first.request())
    d2 = FakeEditor.delta(lm, record.second.request())
    states = {THETA: w0, THETA_M: w0 + d1, THETA_2: w0 + d1 + d2, THETA_E2: w0 + d2}
    spy = ScoreSpy(lm, states)
    monkeypatch.setattr(probability, "score", spy)
    editor = FakeEditor()

    result = run_conflict_case(lm, record, PROMPTS, editor)

    # scored in the protocol's order, each state exactly once
    assert [state for state, _ in spy.log] == [THETA, THETA_2, THETA_M, THETA_E2]
    facts = [
        (_prompt_set("The spouse of {} is", "P26", "Maria Theresa"), "Gena Rowlands"),  # k_o
        (_prompt_set("The father of {} is", "P22", "Maria Josepha"), "John Forbes"),  # k_n explicit
        (_prompt_set("The spouse of {} is", "P26", "Maria Theresa"), "John Forbes"),  # k_n implicit
        (_prompt_set("The mother of {} is", "P25", "Maria Josepha"), "Maria Theresa"),  # tied fact
    ]
    assert all(pairs == _expected_pairs(facts) for _, pairs in spy.log)
    # e1 on θ, e2 on θm, then e2 alone on θ
    assert [(c[0][0].target_new, next(n for n, w in states.items() if torch.equal(w, c[1]))) for c in editor.calls] == [
        ("Gena Rowlands", THETA), ("John Forbes", THETA_M), ("John Forbes", THETA)]
    # the weights are back, bit for bit
    assert weights_fingerprint(lm.model) == lm.fingerprint

    # the numbers are those of the states rebuilt by hand
    monkeypatch.undo()
    expected = {}
    for state, weights in states.items():
        with torch.no_grad():
            lm.parameter(EDITED).copy_(weights)
        expected[state] = [_fact_value(lm, prompts, target) for prompts, target in facts]
    with torch.no_grad():
        lm.parameter(EDITED).copy_(w0)
    for state in states:
        got = result.probabilities[state]
        assert [got[name].value for name in (OLD, NEW_EXPLICIT, NEW_IMPLICIT, TIED)] == pytest.approx(
            expected[state], rel=1e-6)
    old, tied = 0, 3
    metrics = result.metrics
    # expected values come from one score() call per fact, packed differently: float32 rounding only
    assert metrics["CM"] == pytest.approx((expected[THETA_M][old] - expected[THETA_2][old]) / expected[THETA_M][old], abs=1e-6)
    assert metrics["TFD"] == pytest.approx((expected[THETA_M][tied] - expected[THETA_2][tied]) / expected[THETA_M][tied], abs=1e-6)
    assert metrics["TFD_ref"] == pytest.approx((expected[THETA][tied] - expected[THETA_2][tied]) / expected[THETA][tied], abs=1e-6)
    assert metrics["CS_exp"] == float(expected[THETA_2][1] > expected[THETA_2][old])
    assert metrics["CS_imp"] == float(expected[THETA_2][2] > expected[THETA_2][old])

    line = json.loads(json.dumps(result.to_dict()))
    assert line["case_id"] == "composite-0" and set(line["pitfalls"]["probabilities"]) == set(states)
    assert len(line["pitfalls"]["per_prompt"][THETA][OLD]) == 3


def test_reverse_protocol_has_no_single_edit_state(make_lm, monkeypatch):
    lm = make_lm("gpt2")
    record = parse_conflict_record(0, reverse_record())
    w0 = lm.parameter(EDITED).detach().clone()
    d1, d2 = (FakeEditor.delta(lm, r) for r in (record.first.request(), record.second.request()))
    spy = ScoreSpy(lm, {THETA: w0, THETA_M: w0 + d1, THETA_2: w0 + d1 + d2})
    monkeypatch.setattr(probability, "score", spy)
    editor = FakeEditor()

    def warning_editor(lm, requests):
        warnings.warn("the model already answers it", KeditWarning, stacklevel=1)
        return editor(lm, requests)

    result = run_conflict_case(lm, record, PROMPTS, warning_editor)
    assert result.log.warnings == ["e1: the model already answers it", "e2: the model already answers it"]
    assert [state for state, _ in spy.log] == [THETA, THETA_2, THETA_M]
    assert set(result.metrics) == {"CS_exp", "CS_imp", "CM", "CM_ref"}
    assert spy.log[0][1][-3:] == [(p, "Fighting Bulls") for p in _prompt_set(
        "The notable work of {} is", "P800", "Richard Strauss")]
    assert weights_fingerprint(lm.model) == lm.fingerprint


def test_coverage_success_uses_the_second_edit_alone(make_lm):
    lm = make_lm("gpt2")
    record = parse_conflict_record(0, coverage_record())
    result = run_conflict_case(lm, record, PROMPTS, FakeEditor())
    alone = result.probabilities[THETA_E2]
    assert result.metrics["Succ"] == float(alone[NEW_EXPLICIT].value > alone[OLD].value)
    assert weights_fingerprint(lm.model) == lm.fingerprint


def test_a_failing_edit_still_restores_the_weights(make_lm):
    lm = make_lm("gpt2")
    with pytest.raises(KeditError, match="fails here"):
        run_conflict_case(lm, parse_conflict_record(0, composite_record()), PROMPTS, FakeEditor(fail_on_call=2))
    assert weights_fingerprint(lm.model) == lm.fingerprint


class LeakyEdit(WeightEdit):
    """A broken edit whose revert forgets to restore the weights (not ``additive``: the stack applies
    and reverts it through its own methods instead of adding its deltas and restoring its copies)."""

    additive = False

    def revert(self, lm):
        self._originals = None


def test_a_revert_that_does_not_restore_is_caught(make_lm):
    lm = make_lm("gpt2")

    def leaky(lm, requests):
        return LeakyEdit("leaky", tuple(requests), {}, {EDITED: torch.ones_like(lm.parameter(EDITED))}, lm.fingerprint)

    with pytest.raises(EditStateError, match="not restored"):
        run_conflict_case(lm, parse_conflict_record(0, reverse_record()), PROMPTS, leaky)


def test_round_protocol_states_targets_and_mle_request(make_lm, monkeypatch):
    lm = make_lm("gpt2")
    record = parse_round_record(0, round_record(("University of Paris", "Duarte High School", "Berlin")))
    w0 = lm.parameter(EDITED).detach().clone()
    d1 = FakeEditor.delta(lm, record.first_request())
    d2 = FakeEditor.delta(lm, record.multi_label_request())
    spy = ScoreSpy(lm, {THETA: w0, THETA_M: w0 + d1, THETA_2: w0 + d1 + d2})
    monkeypatch.setattr(probability, "score", spy)
    editor, returner = FakeEditor(), FakeEditor()

    result = run_round_case(lm, record, PROMPTS, editor, mle=True, return_editor=returner)

    assert [state for state, _ in spy.log] == [THETA, THETA_2, THETA_M]
    prompts = _prompt_set("{} was educated at", "P69", "Cary Tagawa")
    targets = ["Duarte High School", "University of Rome", "University of Paris", "Berlin"]
    assert spy.log[0][1] == _expected_pairs([(prompts, t) for t in targets])
    [(first,), _] = editor.calls[0]
    [(second,), seen] = returner.calls[0]
    assert first.target_new == "University of Rome" and len(editor.calls) == 1
    assert second.target_new == "Duarte High School" and second.extra_targets == ("University of Paris", "Berlin")
    assert torch.equal(seen, w0 + d1)  # the return edit is computed on θm
    assert weights_fingerprint(lm.model) == lm.fingerprint

    s = {state: {name: f.value for name, f in facts.items()} for state, facts in result.probabilities.items()}
    assert result.metrics["Succ"] == 0.5 * (s[THETA_M][INTERMEDIATE] > s[THETA_M][TARGET]) + 0.5 * (
        s[THETA_2][TARGET] > s[THETA_2][INTERMEDIATE])
    others = ["other_0", "other_1"]
    assert result.metrics["IR"] == sum(s[THETA][o] > s[THETA_2][o] for o in others) / 2
    assert result.to_dict()["mle"] is True


def test_round_protocol_without_mle_sends_the_plain_return_edit(make_lm):
    lm = make_lm("gpt2")
    editor = FakeEditor()
    run_round_case(lm, parse_round_record(0, round_record()), PROMPTS, editor)
    second = editor.calls[1][0][0]
    assert (second.target_new, second.target_true, second.extra_targets) == (
        "Duarte High School", "University of Rome", ())


def test_conflict_case_with_real_rome_restores_the_model(make_lm):
    lm = make_lm("gpt2")
    editor = MethodEditor("rome", overrides={"layer": 1, "v_num_grad_steps": 3, "mom2_adjustment": False,
                                             "context_template_length_params": [[3, 2]]})
    result = run_conflict_case(lm, parse_conflict_record(0, reverse_record()), PROMPTS, editor)
    assert weights_fingerprint(lm.model) == lm.fingerprint
    assert result.log.edits["e1"]["method"] == "rome"
    # e1 made its new object more probable than before
    assert result.probabilities[THETA_M][OLD].value > result.probabilities[THETA][OLD].value


# -------------------------------------------------------------------------------------------- CLI


@pytest.fixture
def fake_method():
    """Registers a deterministic fake method for the command line; the registry is restored after."""
    saved = dict(_REGISTRY)
    calls = []

    @register("fake-pitfalls")
    class FakeMethod:
        summary = "test double"
        hparams_class = dict
        batch_capable = False

        def default_hparams(self, lm, user_file=None, overrides=None):
            return {"scale": 0.3, "layers": (1,), **dict(overrides or {})}  # a tuple: JSON reads it back as a list

        def compute(self, lm, requests, hparams):
            calls.append(requests[0].subject)
            delta = FakeEditor.delta(lm, requests[0]) * hparams["scale"] / 0.3
            return WeightEdit("fake-pitfalls", tuple(requests), hparams, {EDITED: delta}, lm.fingerprint)

    yield calls
    _REGISTRY.clear()
    _REGISTRY.update(saved)


@pytest.fixture(scope="module")
def tiny_gpt2_folder(tmp_path_factory):
    from tests.tiny_models import save_tiny_folder

    return save_tiny_folder(tmp_path_factory.mktemp("tiny-gpt2"), "gpt2")


def _conflict_files(tmp_path):
    records = [reverse_record(), coverage_record(), composite_record()]
    for index, record in enumerate(records):  # distinct subjects per case
        record["edits"][0]["new_object"] = _entity(f"{record['edits'][0]['new_object']['label']} {index}")
        if record["type"] == "reverse":
            record["edits"][1]["subject"] = record["edits"][0]["new_object"]
        if record["type"] == "coverage":
            record["edits"][1]["object"] = record["edits"][0]["new_object"]
    data = _write(tmp_path / "mixed_edit.json", records)
    _write(tmp_path / "conflict_prompts.json", PROMPTS)
    return data


def test_cli_conflict_writes_cases_and_summary_and_resumes(fake_method, tiny_gpt2_folder, tmp_path):
    from kedit.cli.pitfalls import pitfalls_app

    runner = CliRunner()
    data, out = _conflict_files(tmp_path), tmp_path / "run"
    args = ["conflict", "--data", str(data), "--method", "fake-pitfalls", "--model", str(tiny_gpt2_folder),
            "--out", str(out), "--set", "scale=0.3"]
    first = runner.invoke(pitfalls_app, [*args, "--limit", "2"])
    assert first.exit_code == 0, first.output
    lines = (out / "cases.jsonl").read_text().splitlines()
    assert [json.loads(line)["case_id"] for line in lines] == ["reverse-0", "coverage-1"]
    calls_before = len(fake_method)

    # an interrupted write leaves half a line: --resume drops it and runs only the missing case
    with open(out / "cases.jsonl", "a") as handle:
        handle.write('{"case_id": "composite-2", "ind')
    again = runner.invoke(pitfalls_app, [*args, "--resume"])
    assert again.exit_code == 0, again.output
    cases = [json.loads(line) for line in (out / "cases.jsonl").read_text().splitlines()]
    assert [c["case_id"] for c in cases] == ["reverse-0", "coverage-1", "composite-2"]
    assert (out / "cases.jsonl").read_text().splitlines()[:2] == lines
    assert fake_method[calls_before:] == ["Maria Theresa", "Maria Josepha", "Maria Josepha"]  # e1, e2, e2 alone

    summary = json.loads((out / "summary.json").read_text())
    assert summary["kind"] == "pitfalls-conflict" and summary["method"] == "fake-pitfalls"
    assert summary["hparams"] == {"scale": 0.3, "layers": [1]}
    assert summary["data"]["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert summary["model"]["fingerprint"] == json.loads((out / "run.json").read_text())["model"]["fingerprint"]
    assert summary["versions"]["kedit"]
    assert set(summary["metrics"]) == {"reverse", "coverage", "composite"}
    assert summary["metrics"]["reverse"]["CS_exp"] == cases[0]["pitfalls"]["metrics"]["CS_exp"]
    assert summary["metrics"]["composite"]["TFD"] == pytest.approx(cases[2]["pitfalls"]["metrics"]["TFD"])

    refused = runner.invoke(pitfalls_app, args)  # no --resume: the folder is not overwritten
    assert refused.exit_code == 2 and "--resume" in refused.output
    other = runner.invoke(pitfalls_app, [*args[:-1], "scale=0.5", "--resume"])  # other hparams: not the same run
    assert other.exit_code == 2 and "hparams" in other.output


def test_cli_round_and_bad_input(fake_method, tiny_gpt2_folder, tmp_path):
    from kedit.cli.pitfalls import pitfalls_app

    runner = CliRunner()
    data = _write(tmp_path / "easy.json", [round_record(), round_record(("Duarte High School", "A", "B"))])
    _write(tmp_path / "round_prompts.json", PROMPTS)
    out = tmp_path / "round-run"
    args = ["round", "--data", str(data), "--method", "fake-pitfalls", "--model", str(tiny_gpt2_folder)]
    result = runner.invoke(pitfalls_app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kind"] == "pitfalls-round" and set(summary["metrics"]["easy"]) == {
        "cases", "Succ", "D", "D_ref", "IR", "FR"}
    assert summary["metrics"]["easy"]["cases"] == 2

    unknown = runner.invoke(pitfalls_app, [*args, "--out", str(tmp_path / "x"), "--method", "no-such-method"])
    assert unknown.exit_code == 2 and "unknown method" in unknown.output
    (tmp_path / "round_prompts.json").write_text(json.dumps({"P1": ["{} is"]}))
    missing = runner.invoke(pitfalls_app, [*args, "--out", str(tmp_path / "y")])
    assert missing.exit_code == 2 and "P69" in missing.output
