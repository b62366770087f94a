"""Loaders on the real files: the built-in demo set and CounterFact from ../shared/data."""

from __future__ import annotations

import json

import pytest

from kedit.data import demo_cases, load_counterfact
from kedit.errors import RequestError
from tests.requirements import shared_file


def test_demo_set_is_large_and_complete():
    cases = demo_cases()
    assert len(cases) >= 40
    assert len({case.case_id for case in cases}) == len(cases)
    for case in cases:
        assert len(case.rephrases) >= 2, case.case_id
        assert len(case.locality) >= 2, case.case_id
        assert case.request.target_true and case.request.target_true != case.request.target_new
        for probe in case.locality:
            assert case.request.subject not in probe.prompt, case.case_id


def test_counterfact_easyedit_file_loads_every_record():
    path = shared_file("counterfact/easyedit_counterfact-edit.json")
    cases = load_counterfact(path)
    assert len(cases) == len(json.loads(path.read_text()))
    first = cases[0]
    assert first.request.text == "The mother tongue of Danielle Darrieux is"
    assert first.request.target_new == "English" and first.request.target_true == "French"
    assert first.rephrases and first.locality[0].answer == "French"


def test_counterfact_limit_and_malformed_record(tmp_path):
    good = {"prompt": "The capital of France is", "subject": "France", "target_new": "Rome", "ground_truth": "Paris"}
    bad = {"prompt": "The capital of Spain is", "subject": "Italy", "target_new": "Rome"}
    path = tmp_path / "cf.json"
    path.write_text(json.dumps([good, good]))
    assert len(load_counterfact(path, limit=1)) == 1
    path.write_text(json.dumps([good, bad]))
    with pytest.raises(RequestError, match="record 1"):
        load_counterfact(path)
