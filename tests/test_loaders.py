"""Dataset loaders: hand-written records into exact cases, malformed records, detection, registry,
and every real file of the shared data folder checked against its raw JSON."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from kedit.data.counterfact import load_counterfact
from kedit.data.loaders import LoadedDataset, RecordProblem
from kedit.data.mquake import record_groups
from kedit.data.pitfalls import RoundRecord
from kedit.data.registry import DATASETS, dataset_spec, detect_format, load_dataset
from kedit.errors import DataError, KeditWarning, RequestError
from kedit.requests import Case, EditRequest, LocalityProbe, PortabilityProbe
from tests.requirements import require

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def write(tmp_path: Path, payload, name: str = "data.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(payload), encoding="utf-8")
    return path


# ---------------------------------------------------------------- one loader, one hand-written record

ROME_RECORD = {
    "case_id": 7,
    "pararel_idx": 2796,
    "requested_rewrite": {
        "prompt": "The mother tongue of {} is",
        "relation_id": "P103",
        "target_new": {"str": "English", "id": "Q1860"},
        "target_true": {"str": "French", "id": "Q150"},
        "subject": "Danielle Darrieux",
    },
    "paraphrase_prompts": ["Noise here. Danielle Darrieux, a native", "Danielle Darrieux spoke the language"],
    "neighborhood_prompts": ["Léon Blum, a native", "The mother tongue of Michel Rocard is"],
    "attribute_prompts": ["J.R.R. Tolkien is a native speaker of"],
    "generation_prompts": ["Danielle Darrieux's mother tongue is"],
}


def test_counterfact_rome_layout(tmp_path):
    loaded = load_dataset("counterfact", write(tmp_path, [ROME_RECORD]))
    assert loaded.problems == () and loaded.records_read == 1
    assert loaded.cases == (Case(
        request=EditRequest("The mother tongue of {} is", "Danielle Darrieux", "English", "French"),
        rephrases=("Noise here. Danielle Darrieux, a native", "Danielle Darrieux spoke the language"),
        # neighbours share the subject's old answer, so "French" answers each of them
        locality=(LocalityProbe("Léon Blum, a native", "French"),
                  LocalityProbe("The mother tongue of Michel Rocard is", "French")),
        case_id="7",
    ),)


def test_counterfact_easyedit_layout(tmp_path):
    record = {"case_id": 3, "prompt": "The mother tongue of Danielle Darrieux is", "target_new": "English",
              "subject": "Danielle Darrieux", "ground_truth": "French",
              "rephrase_prompt": "Where Danielle Darrieux is from, people speak the language of",
              "locality_prompt": "Michel Rocard is a native speaker of", "locality_ground_truth": "French"}
    (case,) = load_dataset("counterfact-easyedit", write(tmp_path, [record])).cases
    assert case == Case(
        request=EditRequest("The mother tongue of {} is", "Danielle Darrieux", "English", "French"),
        rephrases=("Where Danielle Darrieux is from, people speak the language of",),
        locality=(LocalityProbe("Michel Rocard is a native speaker of", "French"),),
        case_id="3",
    )


def test_zsre_with_portability(tmp_path):
    record = {"subject": "UniFirst", "src": "What is the product made by UniFirst?", "pred": "uniform",
              "rephrase": "What will be the product of UniFirst?", "alt": "unmanned aircraft",
              "answers": ["uniform", "uniforms"], "loc": "nq question: who plays walter in the big lebowski",
              "loc_ans": "John Goodman", "cond": "uniform >> unmanned aircraft || ...",
              "portability": {"Recalled Relation": "(x, y, z)", "New Question": "What flies for UniFirst?",
                              "New Answer": "Drones"}}
    (case,) = load_dataset("zsre", write(tmp_path, [record])).cases
    assert case == Case(
        request=EditRequest("What is the product made by {}?", "UniFirst", "unmanned aircraft", "uniform"),
        rephrases=("What will be the product of UniFirst?",),
        locality=(LocalityProbe("nq question: who plays walter in the big lebowski", "John Goodman"),),
        portability=(PortabilityProbe("What flies for UniFirst?", "Drones"),),
        case_id="0",
    )


def test_knowedit_flattens_probe_kinds_and_takes_first_alias(tmp_path):
    record = {
        "subject": "Leonardo DiCaprio", "prompt": "The country of citizenship of Leonardo DiCaprio is",
        "target_new": "Syria", "ground_truth": ["United States of America"],
        "rephrase_prompt": "Leonardo DiCaprio is a citizen of",
        "portability": {
            "Reasoning": [{"prompt": "The currency of the country of Leonardo DiCaprio is",
                           "ground_truth": [["Syrian pound", "SYP"]]}],
            "Subject_Aliasing": [{"prompt": "The country of citizenship of Leo DiCaprio is", "ground_truth": "Syria"}],
        },
        "locality": {
            "Relation_Specificity": [{"prompt": "The mother of Leonardo DiCaprio is",
                                      "ground_truth": [["Irmelin DiCaprio", "Irmelin Indenbirken"]]}],
            "Forgetfulness": [{"prompt": "The father of Leonardo DiCaprio is", "ground_truth": ["George DiCaprio"]}],
        },
    }
    recent = {"subject": "Ingrīda Amantova", "prompt": "The gender of Ingrīda Amantova is", "target_new": "female",
              "portability": {}, "locality": {}}
    loaded = load_dataset("knowedit", write(tmp_path, [record, recent]))
    assert loaded.cases == (
        Case(
            request=EditRequest("The country of citizenship of {} is", "Leonardo DiCaprio", "Syria",
                                "United States of America"),
            rephrases=("Leonardo DiCaprio is a citizen of",),
            locality=(LocalityProbe("The mother of Leonardo DiCaprio is", "Irmelin DiCaprio"),
                      LocalityProbe("The father of Leonardo DiCaprio is", "George DiCaprio")),
            portability=(PortabilityProbe("The currency of the country of Leonardo DiCaprio is", "Syrian pound"),
                         PortabilityProbe("The country of citizenship of Leo DiCaprio is", "Syria")),
            case_id="0",
        ),
        # Wiki-recent: a new fact, so no old answer
        Case(request=EditRequest("The gender of {} is", "Ingrīda Amantova", "female", None), case_id="1"),
    )


def test_knowedit_wikibio(tmp_path):
    record = {"text": "This is a Wikipedia passage about rick mahler. Rick Mahler was a pitcher.",
              "labels": "Mahler was drafted by the Braves.", "concept": "rick mahler",
              "locality": {"Relation_Specificity": [{"prompt": "rick mahler cause of death",
                                                     "ground_truth": ["myocardial infarction"]}]}}
    (case,) = load_dataset("knowedit-wikibio", write(tmp_path, [record])).cases
    assert case.request == EditRequest("This is a Wikipedia passage about {}. Rick Mahler was a pitcher.",
                                       "rick mahler", "Mahler was drafted by the Braves.")
    assert case.locality == (LocalityProbe("rick mahler cause of death", "myocardial infarction"),)
    assert case.rephrases == () and case.portability == ()


def _trivia(question: str, answer: str, target: str = "I don't know.") -> dict:
    return {"question": question, "ground_truth": answer, "target_new": target}


def test_knowedit_sanitation_deals_retain_questions_round_robin(tmp_path):
    forget = [_trivia(f"Forget question {i}?", f"a{i}") for i in range(3)]
    retain = [_trivia(f"Retain question {j}?", f"r{j}", f"r{j}") for j in range(5)]
    path = write(tmp_path, {"success": forget, "locality": retain})
    loaded = load_dataset("knowedit-sanitation", path)
    assert [case.request.prompt for case in loaded.cases] == ["{}"] * 3  # the whole question is the subject
    assert loaded.cases[0].request == EditRequest("{}", "Forget question 0?", "I don't know.", "a0")
    # retain question j goes to case j mod 3
    assert [[probe.answer for probe in case.locality] for case in loaded.cases] == [["r0", "r3"], ["r1", "r4"], ["r2"]]
    # with limit=2 the five retain questions are dealt over two cases, none lost
    limited = load_dataset("knowedit-sanitation", path, limit=2)
    assert [[probe.answer for probe in case.locality] for case in limited.cases] == [["r0", "r2", "r4"], ["r1", "r3"]]
    # the train file's layout: K_F with a subject inside the question, K_R
    train = write(tmp_path, {"K_F": [{**forget[0], "question": "How can you govern a country of cheeses?",
                                      "subject": "a country of cheeses"}], "K_R": retain[:1]}, "train.json")
    (case,) = load_dataset("auto", train).cases
    assert case.request == EditRequest("How can you govern {}?", "a country of cheeses", "I don't know.", "a0")
    assert case.locality == (LocalityProbe("Retain question 0?", "r0"),)


MQUAKE_RECORD = {
    "case_id": 41,
    "requested_rewrite": [
        {"prompt": "{} was performed by", "relation_id": "P175", "target_new": {"str": "Madonna", "id": "Q1"},
         "target_true": {"str": "The Beatles", "id": "Q2"}, "subject": "Hey Jude", "question": "Who performed Hey Jude?"},
        {"prompt": "{} is a citizen of", "relation_id": "P27", "target_new": {"str": "Australia", "id": "Q3"},
         "target_true": {"str": "United States", "id": "Q4"}, "subject": "Madonna",
         "question": "What is the country of citizenship of Madonna?"},
    ],
    "questions": ["Which country is the performer of Hey Jude a citizen of?",
                  "Where does the singer of Hey Jude hold citizenship?"],
    "answer": "United Kingdom", "new_answer": "Australia", "new_answer_alias": ["AU"],
    "new_single_hops": [
        {"question": "Who performed Hey Jude?", "cloze": "Hey Jude was performed by", "answer": "Madonna"},
        {"question": "What is the country of citizenship of Madonna?", "cloze": "Madonna is a citizen of",
         "answer": "Australia"},
        {"question": "What is the capital of Australia?", "cloze": "The capital of Australia is", "answer": "Canberra"},
    ],
}


def test_mquake_one_case_per_rewrite_with_chain_probes_on_the_first(tmp_path):
    loaded = load_dataset("mquake", write(tmp_path, [MQUAKE_RECORD]))
    first, second = loaded.cases
    assert first == Case(
        request=EditRequest("{} was performed by", "Hey Jude", "Madonna", "The Beatles"),
        rephrases=("Who performed Hey Jude?",),
        # the capital hop is not edited: a real fact that must survive the two edits
        locality=(LocalityProbe("The capital of Australia is", "Canberra"),),
        portability=(PortabilityProbe("Which country is the performer of Hey Jude a citizen of?", "Australia"),
                     PortabilityProbe("Where does the singer of Hey Jude hold citizenship?", "Australia")),
        case_id="41/0",
    )
    assert second == Case(request=EditRequest("{} is a citizen of", "Madonna", "Australia", "United States"),
                          rephrases=("What is the country of citizenship of Madonna?",), case_id="41/1")
    other = {**MQUAKE_RECORD, "case_id": 42}
    grouped = record_groups(load_dataset("mquake", write(tmp_path, [MQUAKE_RECORD, other])).cases)
    assert [[case.case_id for case in group] for group in grouped] == [["41/0", "41/1"], ["42/0", "42/1"]]


def test_mquake_t_triples(tmp_path):
    record = {"prompt": "The head of the {} government is", "subject": "New York City", "target_new": "Eric Adams",
              "target_true": "Bill de Blasio", "question": "Who heads the New York City government?"}
    assert load_dataset("mquake-t", write(tmp_path, [record])).cases == (Case(
        request=EditRequest("The head of the {} government is", "New York City", "Eric Adams", "Bill de Blasio"),
        rephrases=("Who heads the New York City government?",), case_id="0"),)


def test_wise_temporal_reads_ood_rephrase(tmp_path):
    record = {"prompt": "Tesla, Inc.,", "subject": "Tesla, Inc.,", "target_new": "is a car maker.",
              "ood_rephrase": "Tesla, Inc., based in Austin, builds cars.",
              "locality_prompt": "What can we learn from", "locality_ground_truth": "EU colleagues?"}
    (case,) = load_dataset("wise", write(tmp_path, [record])).cases
    assert case == Case(request=EditRequest("{}", "Tesla, Inc.,", "is a car maker."),
                        rephrases=("Tesla, Inc., based in Austin, builds cars.",),
                        locality=(LocalityProbe("What can we learn from", "EU colleagues?"),), case_id="0")


# ---------------------------------------------------------------- malformed records, strict mode, files

EASY_GOOD = {"case_id": 10, "prompt": "The capital of France is", "subject": "France", "target_new": "Rome",
             "ground_truth": "Paris", "rephrase_prompt": "France's capital is",
             "locality_prompt": "The capital of Spain is", "locality_ground_truth": "Madrid"}


def test_malformed_records_are_reported_with_index_id_and_field(tmp_path):
    records = [
        EASY_GOOD,
        {**EASY_GOOD, "case_id": 11, "subject": "Italy"},  # subject not in the prompt
        {key: value for key, value in EASY_GOOD.items() if key != "target_new"} | {"case_id": 12},
        "not an object",
        {**EASY_GOOD, "case_id": 14, "locality_ground_truth": ""},
        {**EASY_GOOD, "case_id": 15, "rephrase_prompt": 3},
        {**EASY_GOOD, "case_id": 16},
    ]
    loaded = load_dataset("counterfact-easyedit", write(tmp_path, records))
    assert [case.case_id for case in loaded.cases] == ["10", "16"]
    assert loaded.records_read == 7
    assert [(p.index, p.record_id, p.field) for p in loaded.problems] == [
        (1, "11", "prompt"), (2, "12", "target_new"), (3, None, "record"),
        (4, "14", "locality_ground_truth"), (5, "15", "rephrase_prompt"),
    ]
    assert "does not occur" in loaded.problems[0].message
    assert "missing" in loaded.problems[1].message
    assert str(loaded.problems[1]).startswith("record 2 (id 12): field 'target_new'")


def test_strict_raises_at_the_first_problem_naming_record_and_field(tmp_path):
    path = write(tmp_path, [EASY_GOOD, {**EASY_GOOD, "case_id": 11, "target_new": ["a", "b"], "subject": "Italy"}])
    with pytest.raises(DataError, match=r"record 1 \(id 11\): field 'prompt'"):
        load_dataset("counterfact-easyedit", path, strict=True)
    # the benchmarks' entry point is strict too, and DataError is still a RequestError for old callers
    with pytest.raises(RequestError, match="record 1"):
        load_counterfact(path)


def test_mquake_skips_the_whole_record_when_one_rewrite_is_bad(tmp_path):
    bad = json.loads(json.dumps(MQUAKE_RECORD))
    bad["requested_rewrite"][1]["target_new"] = {"id": "Q3"}
    loaded = load_dataset("mquake", write(tmp_path, [bad]))
    assert loaded.cases == ()
    assert [(p.index, p.record_id, p.field) for p in loaded.problems] == [(0, "41", "requested_rewrite[1].target_new")]


def test_limit_json_lines_and_sha256(tmp_path):
    path = tmp_path / "cf.jsonl"
    path.write_text("\n".join(json.dumps({**EASY_GOOD, "case_id": i}) for i in range(4)) + "\n")
    loaded = load_dataset("auto", path, limit=2)
    assert loaded.name == "counterfact-easyedit" and [c.case_id for c in loaded.cases] == ["0", "1"]
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    # one object a line in a .json file reads the same
    same = tmp_path / "cf.json"
    same.write_bytes(path.read_bytes())
    assert len(load_dataset("counterfact-easyedit", same).cases) == 4
    with pytest.raises(DataError, match="limit"):
        load_dataset("counterfact-easyedit", path, limit=-1)


def test_legacy_load_counterfact_reads_both_layouts(tmp_path):
    assert load_counterfact(write(tmp_path, [ROME_RECORD], "rome.json"))[0].request.target_true == "French"
    assert [c.case_id for c in load_counterfact(write(tmp_path, [EASY_GOOD] * 3), limit=2)] == ["10", "10"]


def test_bad_files_raise_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("zsre", tmp_path / "absent.json")
    broken = tmp_path / "broken.json"
    broken.write_text('[{"src": ')
    with pytest.raises(DataError, match="not valid JSON"):
        load_dataset("zsre", broken)
    with pytest.raises(DataError, match="expected a JSON list"):
        load_dataset("zsre", write(tmp_path, {"src": "x"}))


# ---------------------------------------------------------------- detection and registry

@pytest.mark.parametrize(("record", "expected"), [
    (ROME_RECORD, "counterfact"),
    (EASY_GOOD, "counterfact-easyedit"),
    ({"src": "q", "subject": "s", "alt": "a", "answers": ["b"], "rephrase": "r", "loc": "l", "loc_ans": "m"}, "zsre"),
    ({"prompt": "p", "subject": "s", "target_new": "t", "locality": {}, "portability": {}}, "knowedit"),
    ({"text": "t", "labels": "l", "concept": "c", "locality": {}}, "knowedit-wikibio"),
    (MQUAKE_RECORD, "mquake"),
    ({"prompt": "{}", "subject": "s", "target_new": "t", "target_true": "u", "question": "q"}, "mquake-t"),
    ({"prompt": "p", "subject": "s", "target_new": "t", "locality_prompt": "l", "locality_ground_truth": "g"}, "wise"),
    ({"rule": "P1>P2", "triples": [], "prerequisites": [], "type": "reverse", "edits": []}, "conflictedit"),
    ({"type": "1-2@P69", "edit": {}, "true_objects": []}, "roundedit"),
])
def test_detect_format(tmp_path, record, expected):
    assert detect_format(write(tmp_path, [record, record])) == expected


def test_detect_format_sanitation_object_and_unknown_keys(tmp_path):
    assert detect_format(write(tmp_path, {"success": [], "locality": []})) == "knowedit-sanitation"
    with pytest.raises(DataError, match=r"match no known dataset format.*counterfact-easyedit: \[") as error:
        detect_format(write(tmp_path, [{"ent": "Estero", "pos": [], "neg": []}]))
    assert all(name in str(error.value) for name in DATASETS)


def test_registry_is_immutable_and_names_are_forgiving():
    with pytest.raises(TypeError):
        DATASETS["mine"] = DATASETS["zsre"]  # type: ignore[index]
    assert dataset_spec("ConflictEdit").name == "conflictedit"
    assert dataset_spec(" counterfact_easyedit ").name == "counterfact-easyedit"
    with pytest.raises(DataError, match="unknown dataset 'cf'.*zsre"):
        dataset_spec("cf")


def test_pitfalls_files_load_into_records_with_the_shared_problem_type(tmp_path):
    good = {"type": "1-2@P69", "true_objects": [{"label": "A"}, {"label": "B"}],
            "edit": {"relation": {"id": "P69", "prompt": "{} was educated at"}, "subject": {"label": "Cary"},
                     "object": {"label": "A"}, "new_object": {"label": "C"}}}
    path = write(tmp_path, [good, {"type": "1-2@P69", "true_objects": []}, good])
    with pytest.warns(KeditWarning, match="skipped 1 malformed"):
        loaded = load_dataset("RoundEdit", path, limit=2)
    assert isinstance(loaded, LoadedDataset) and loaded.name == "roundedit"
    assert loaded.cases == () and loaded.records_read == 2
    assert [(type(record), record.subject) for record in loaded.records] == [(RoundRecord, "Cary")]
    assert loaded.problems == (RecordProblem(1, None, "edit", "missing; the record has keys ['true_objects', 'type']"),)
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- the real files

def _raw(relative: str):
    path = DATA / relative
    require(path.is_file(), f"shared data file {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return path, [json.loads(line) for line in text.splitlines() if line.strip()]
    return path, json.loads(text)


def _value_at(record, field: str):
    """The raw value a problem's field path points at ("a.b[3].c"); Ellipsis when absent."""
    value = record
    for name, position in re.findall(r"([^.\[\]]+)(?:\[(\d+)\])?", field):
        if not isinstance(value, dict) or name not in value:
            return ...
        value = value[name]
        if position:
            value = value[int(position)]
    return value


def _is_defective(value) -> bool:
    while isinstance(value, list) and value:
        value = value[0]
    return value is ... or value is None or value == [] or (isinstance(value, str) and not value.strip()) \
        or (isinstance(value, dict) and "str" not in value)


# relative path, format, limit, expected cases, expected skipped records
REAL_FILES = [
    ("counterfact/easyedit_counterfact-edit.json", "counterfact-easyedit", 500, 500, 0),
    ("counterfact/easyedit_counterfact-train.json", "counterfact-easyedit", 500, 500, 0),
    ("zsre/zsre_mend_train-1k.json", "zsre", None, 998, 2),
    ("knowedit/portability/zsre_mend_eval_portability_gpt4.json", "zsre", None, 1037, 0),
    ("knowedit/ZsRE/ZsRE-test-all.json", "knowedit", None, 1299, 5),
    ("knowedit/wiki_counterfact/train_cf.json", "knowedit", None, 1426, 2),
    ("knowedit/wiki_counterfact/test_cf.derived.json", "knowedit", None, 858, 27),
    ("knowedit/wiki_counterfact/test_cf-generate-10.jsonl", "knowedit", 100, None, None),
    ("knowedit/wiki_recent/recent_train.json", "knowedit", None, 563, 7),
    ("knowedit/WikiBio/wikibio-test-all.json", "knowedit-wikibio", None, 306, 0),
    ("knowedit/WikiBio/wikibio-train-all.json", "knowedit-wikibio", None, 464, 0),
    ("knowedit/trivia/trivia_qa_test.json", "knowedit-sanitation", None, 80, 0),
    ("knowedit/trivia/trivia_qa_train.json", "knowedit-sanitation", None, 80, 0),
    ("mquake/MQuAKE-hard.json", "mquake", None, 4 * 429, 0),
    ("mquake/benchmarkingke_new_mquake-t.json", "mquake-t", None, 3735, 1),
    ("wise/hallucination-edit.json", "wise", None, 593, 7),
    ("wise/hallucination-train.json", "wise", None, 301, 5),
    ("wise/temporal-edit.json", "wise", None, 75, 0),
    ("wise/temporal-train.json", "wise", None, 74, 1),
]


@pytest.mark.parametrize(("relative", "name", "limit", "n_cases", "n_skipped"), REAL_FILES,
                         ids=[row[0] for row in REAL_FILES])
def test_real_file_loads_and_every_skip_is_a_real_defect(relative, name, limit, n_cases, n_skipped):
    path, raw = _raw(relative)
    assert detect_format(path) == name
    loaded = load_dataset(name, path, limit=limit)
    records = raw["success"] if name == "knowedit-sanitation" and "success" in raw else raw
    records = records["K_F"] if isinstance(records, dict) else records
    assert loaded.records_read == (len(records) if limit is None else limit)
    if n_cases is not None:
        assert (len(loaded.cases), len(loaded.problems)) == (n_cases, n_skipped)
    for problem in loaded.problems:
        record = records[problem.index]
        if "/" in problem.field:  # the request as a whole: subject not in prompt, or padded with spaces
            prompt, subject = record["prompt"], record["subject"]
            assert subject not in prompt or subject != subject.strip(), problem
        else:
            assert _is_defective(_value_at(record, problem.field)), problem


def test_real_counterfact_record_matches_raw_json():
    path, raw = _raw("counterfact/easyedit_counterfact-edit.json")
    case = load_dataset("counterfact-easyedit", path, limit=5).cases[4]
    record = raw[4]
    assert case.case_id == str(record["case_id"])
    assert case.request.text == record["prompt"] and case.request.subject == record["subject"]
    assert (case.request.target_new, case.request.target_true) == (record["target_new"], record["ground_truth"])
    assert case.rephrases == (record["rephrase_prompt"],)
    assert case.locality == (LocalityProbe(record["locality_prompt"], record["locality_ground_truth"]),)


def test_real_zsre_portability_record_matches_raw_json():
    path, raw = _raw("knowedit/portability/zsre_mend_eval_portability_gpt4.json")
    (case,) = load_dataset("zsre", path, limit=1).cases
    record = raw[0]
    assert case.request.text == record["src"] and case.request.target_new == record["alt"]
    assert case.request.target_true == record["answers"][0]
    assert case.rephrases == (record["rephrase"],)
    assert case.locality == (LocalityProbe(record["loc"], record["loc_ans"]),)
    assert case.portability == (PortabilityProbe(record["portability"]["New Question"],
                                                 record["portability"]["New Answer"]),)


def test_real_knowedit_record_matches_raw_json():
    path, raw = _raw("knowedit/wiki_counterfact/test_cf.derived.json")
    case = load_dataset("knowedit", path, limit=1).cases[0]
    record = raw[0]
    assert case.request.text == record["prompt"] and case.request.target_true == record["ground_truth"]
    expected_locality = [(item["prompt"], item["ground_truth"][0][0])
                         for items in record["locality"].values() for item in items]
    assert [(p.prompt, p.answer) for p in case.locality] == expected_locality
    expected_portability = [(item["prompt"], item["ground_truth"][0][0])
                            for items in record["portability"].values() for item in items]
    assert [(p.prompt, p.answer) for p in case.portability] == expected_portability


def test_real_mquake_record_matches_raw_json():
    path, raw = _raw("mquake/MQuAKE-hard.json")
    loaded = load_dataset("mquake", path, limit=2)
    groups = record_groups(loaded.cases)
    assert [len(group) for group in groups] == [len(r["requested_rewrite"]) for r in raw[:2]]
    record, group = raw[1], groups[1]
    for case, rewrite in zip(group, record["requested_rewrite"], strict=True):
        assert case.request.prompt == rewrite["prompt"] and case.request.subject == rewrite["subject"]
        assert case.request.target_new == rewrite["target_new"]["str"]
        assert case.request.target_true == rewrite["target_true"]["str"]
        assert case.rephrases == (rewrite["question"],)
    assert group[0].portability == tuple(PortabilityProbe(q, record["new_answer"]) for q in record["questions"])
    assert all(case.portability == () for case in group[1:])


def test_real_wise_and_sanitation_records_match_raw_json():
    path, raw = _raw("wise/temporal-edit.json")
    case = load_dataset("wise", path, limit=3).cases[2]
    assert case.request.text == raw[2]["prompt"] and case.request.target_new == raw[2]["target_new"].strip()
    assert case.rephrases == (raw[2]["ood_rephrase"],)
    path, raw = _raw("knowedit/trivia/trivia_qa_test.json")
    loaded = load_dataset("knowedit-sanitation", path)
    assert loaded.cases[1].request.text == raw["success"][1]["question"]
    assert loaded.cases[1].locality[0] == LocalityProbe(raw["locality"][1]["question"], raw["locality"][1]["ground_truth"])
    assert sum(len(case.locality) for case in loaded.cases) == len(raw["locality"])


def test_real_pitfalls_files_are_recognised():
    for relative, name in (("pitfalls/GPT2-XL/reverse_edit.json", "conflictedit"),
                           ("pitfalls/GPT2-XL/easy.json", "roundedit")):
        path, _ = _raw(relative)
        assert detect_format(path) == name


# ---------------------------------------------------------------- kedit data check / list

def test_cli_check_prints_counts_and_problems(tmp_path):
    from typer.testing import CliRunner

    from kedit.cli.data import data_app

    path = write(tmp_path, [EASY_GOOD, {**EASY_GOOD, "case_id": 11, "subject": "Italy"}])
    runner = CliRunner()
    result = runner.invoke(data_app, ["check", str(path)], terminal_width=200)
    assert result.exit_code == 1, result.output  # a record was skipped
    assert "counterfact-easyedit" in result.output
    assert re.search(r"records skipped\s*│\s*1", result.output) and re.search(r"cases\s*│\s*1", result.output)
    assert re.search(r"│ 1\s*│ 11\s*│ prompt\s*│ subject 'Italy' does not occur", result.output)
    strict = runner.invoke(data_app, ["check", str(path), "--name", "counterfact-easyedit", "--strict"])
    assert strict.exit_code == 2 and "record 1 (id 11): field 'prompt'" in strict.output
    clean = runner.invoke(data_app, ["check", str(write(tmp_path, [EASY_GOOD], "ok.json"))])
    assert clean.exit_code == 0 and "every record loaded" in clean.output
    listing = runner.invoke(data_app, ["list"], terminal_width=200)
    assert listing.exit_code == 0 and all(name in listing.output for name in DATASETS)
