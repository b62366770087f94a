"""The training and evaluation sets of the trained editors (MEND, SERAC) and the Yao et al. 2023
portability / locality sets: records read from the real files of ../shared/data checked by hand,
detection, and the refusals that keep a layout from being misread."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kedit.data.portability import LOCALITY_KINDS, PORTABILITY_KINDS, PiqaQuestion, deal_locality, load_piqa
from kedit.data.registry import DATASETS, detect_format, load_dataset
from kedit.data.zsre import load_zsre, load_zsre_derived
from kedit.errors import DataError, RequestError
from kedit.requests import Case, EditRequest, LocalityProbe, PortabilityProbe, load_cases
from tests.requirements import shared_file

DERIVED = "zsre/derived-10k/zsre_mend_train_10000.json"
DERIVED_TARGETS = "zsre/derived-10k/zsre_mend_train_en_10000.txt"
PL = "portability-locality/"


def derived_path() -> Path:
    shared_file(DERIVED_TARGETS)  # the loader needs both files
    return shared_file(DERIVED)


def by_id(cases) -> dict[str, Case]:
    return {case.case_id: case for case in cases}


def write(path: Path, payload) -> Path:
    path.write_text(json.dumps(payload), encoding="utf-8")
    return path


# ---------------------------------------------------------------- ZsRE derived-10k, real files

def test_zsre_derived_records_by_hand():
    loaded = load_dataset("zsre-derived", derived_path())
    assert loaded.name == "zsre-derived" and loaded.records_read == 10000
    # 35 lines of the .txt have nothing after the TAB (gender questions): those records are skipped
    assert (len(loaded.cases), len(loaded.problems)) == (9965, 35)
    assert {problem.field for problem in loaded.problems} == {"target_new"}
    assert str(loaded.problems[0]) == ("record 39 (id 39): field 'target_new': line 40 of "
                                       "zsre_mend_train_en_10000.txt has an empty target (nothing after the TAB)")
    cases = by_id(loaded.cases)
    assert "39" not in cases
    assert cases["0"] == Case(
        # alt is "French", the TRUE answer; the .txt says "German", the edit target
        request=EditRequest("What is the native language of {}?", "Christiane Cohendy", "German", "French"),
        rephrases=("What's Christiane Cohendy's mother tongue?",),
        # the file's loc ends "...walking dead?": the one "?" the derived layout appends is removed
        locality=(LocalityProbe("nq question: what is the most current season of the walking dead",
                                "The eighth season"),),
        case_id="0",
    )
    assert cases["1"] == Case(
        request=EditRequest("What is the final year of {}?", "Atlanta Flames", "1931", "1980"),
        rephrases=("What year ended with Atlanta Flames?",),
        locality=(LocalityProbe("nq question: what is the minimum age to get married in illinois", "16"),),
        case_id="1",
    )
    assert cases["4"] == Case(
        request=EditRequest("What was the designer of {}'s name?", "Évry Cathedral", "Mario Gariazzo",
                            "Mario Botta"),
        rephrases=("What designer was in charge of Évry Cathedral?",),
        locality=(LocalityProbe("nq question: what is the alcohol content of dr mcgillicuddy",
                                "15–30% alcohol by volume"),),
        case_id="4",
    )
    last = cases["9999"]
    assert last.request.text == "What is the country Tosca is from?"
    assert (last.request.subject, last.request.target_new, last.request.target_true) == ("Tosca", "Finland", "Italy")
    assert last.locality == (LocalityProbe("nq question: who plays professor proton in the big bang theory",
                                           "George Robert Newhart"),)
    assert all(probe.kind is None for case in loaded.cases for probe in case.locality)


def test_zsre_derived_is_detected_and_plain_zsre_cannot_misread_it():
    path = derived_path()
    assert detect_format(path) == "zsre-derived"
    assert load_dataset("auto", path, limit=3).name == "zsre-derived"
    # read as plain zsre, alt ("French") would silently become the new target: refused instead
    for strict in (False, True):
        with pytest.raises(DataError, match=r"record 0 has case_id and no answers.*TRUE answer.*'zsre-derived'"):
            load_dataset("zsre", path, strict=strict)


def test_zsre_derived_refuses_plain_zsre_and_detection_keeps_them_apart(tmp_path):
    plain = {"case_id": 5, "subject": "UniFirst", "src": "What is the product made by UniFirst?",
             "rephrase": "What will be the product of UniFirst?", "alt": "unmanned aircraft", "answers": ["uniform"],
             "loc": "nq question: who plays walter in the big lebowski", "loc_ans": "John Goodman"}
    path = write(tmp_path / "zsre_10.json", [plain, plain])
    # answers present: plain MEND ZsRE even with a case_id, whose alt is the new answer
    assert detect_format(path) == "zsre"
    (case, _) = load_zsre(path).cases
    assert (case.request.target_new, case.request.target_true) == ("unmanned aircraft", "uniform")
    with pytest.raises(DataError, match=r"record 0 has answers: plain MEND ZsRE.*read it as 'zsre'"):
        load_zsre_derived(path)
    # one sampled record with answers is enough to rule the derived layout out
    derived = {key: value for key, value in plain.items() if key != "answers"}
    assert detect_format(write(tmp_path / "mixed_2.json", [derived, plain])) == "zsre"
    assert detect_format(write(tmp_path / "derived_2.json", [derived, derived])) == "zsre-derived"


# ---------------------------------------------------------------- ZsRE derived-10k, bad input

def _derived(tmp_path: Path, lines: list[str] | None, name: str = "zsre_mend_train_3.json", **changes) -> Path:
    records = [
        {"case_id": 0, "subject": "Christiane Cohendy", "src": "What is the native language of Christiane Cohendy?",
         "rephrase": "What's Christiane Cohendy's mother tongue?", "alt": "French",
         "loc": "nq question: who sang hey jude?", "loc_ans": "The Beatles"},
        {"case_id": 1, "subject": "Atlanta Flames", "src": "What is the final year of Atlanta Flames?",
         "rephrase": "What year ended with Atlanta Flames?", "alt": "1980",
         "loc": "nq question: is this a question??", "loc_ans": "yes"},
        {"case_id": 2, "subject": "Tosca", "src": "What is the country Tosca is from?",
         "rephrase": "What is the country from which Tosca originates?", "alt": "Italy",
         "loc": "nq question: who plays professor proton in the big bang theory?", "loc_ans": "Bob Newhart"},
    ]
    for index, fields in changes.items():
        records[int(index.removeprefix("r"))].update(fields)
    path = write(tmp_path / name, records)
    if lines is not None:
        stem, count = name.removesuffix(".json").rsplit("_", 1)
        (tmp_path / f"{stem}_en_{count}.txt").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


TARGET_LINES = ["What is the native language of Christiane Cohendy?\tGerman",
                "What is the final year of Atlanta Flames?\t1931",
                "What is the country Tosca is from?\tFinland"]


def test_zsre_derived_small_file_strips_exactly_one_question_mark(tmp_path):
    loaded = load_zsre_derived(_derived(tmp_path, TARGET_LINES))
    assert loaded.problems == ()
    assert [(c.request.target_new, c.request.target_true) for c in loaded.cases] == [
        ("German", "French"), ("1931", "1980"), ("Finland", "Italy")]
    assert [c.locality[0].prompt for c in loaded.cases] == [
        "nq question: who sang hey jude", "nq question: is this a question?",
        "nq question: who plays professor proton in the big bang theory"]


def test_zsre_derived_targets_line_mismatch_names_the_line(tmp_path):
    lines = [TARGET_LINES[0], "What is the first year of Atlanta Flames?\t1931", TARGET_LINES[2]]
    message = one_line_refusal(load_zsre_derived, _derived(tmp_path, lines))
    assert "zsre_mend_train_en_3.txt: line 2: question 'What is the first year of Atlanta Flames?' is not " \
           "record 1's src 'What is the final year of Atlanta Flames?'" in message


def one_line_refusal(load, *args, **kwargs) -> str:
    with pytest.raises(DataError) as error:
        load(*args, **kwargs)
    message = str(error.value)
    assert "\n" not in message, message
    return message


def test_zsre_derived_missing_short_long_and_malformed_targets(tmp_path):
    assert re.search(r"zsre_mend_train_en_3\.txt: the edit targets of .*zsre_mend_train_3\.json are missing; put "
                     r"the targets file .* or pass targets=PATH",
                     one_line_refusal(load_zsre_derived, _derived(tmp_path, None)))
    assert re.search(r"zsre_mend_train_en_3\.txt: 2 lines for the 3 records .* short",
                     one_line_refusal(load_zsre_derived, _derived(tmp_path, TARGET_LINES[:2])))
    assert re.search("4 lines for the 3 records .* not the targets of this file",
                     one_line_refusal(load_zsre_derived, _derived(tmp_path, [*TARGET_LINES, "What?\tNo"])))
    assert "line 3 has 0 TABs, expected one" in one_line_refusal(
        load_zsre_derived, _derived(tmp_path, [*TARGET_LINES[:2], "What is the country Tosca is from? Finland"]))
    assert re.search("cannot tell its targets file from the name.*pass targets=PATH",
                     one_line_refusal(load_zsre_derived, _derived(tmp_path, None, name="derived.json")))


def test_zsre_derived_explicit_targets_and_record_problems(tmp_path):
    path = _derived(tmp_path, None, name="derived.json", r2={"loc": "nq question: no mark"})
    targets = tmp_path / "my targets.tsv"
    targets.write_text("\n".join([TARGET_LINES[0], "What is the final year of Atlanta Flames?\t ",
                                  TARGET_LINES[2]]), encoding="utf-8")  # no final newline: still three lines
    loaded = load_zsre_derived(path, targets=targets)
    assert [case.case_id for case in loaded.cases] == ["0"]
    assert [(p.index, p.record_id, p.field) for p in loaded.problems] == [(1, "1", "target_new"), (2, "2", "loc")]
    assert "line 2 of my targets.tsv has an empty target" in loaded.problems[0].message
    assert "does not end with the '?'" in loaded.problems[1].message
    with pytest.raises(DataError, match=r"record 1 \(id 1\): field 'target_new'"):
        load_zsre_derived(path, targets=targets, strict=True)


# ---------------------------------------------------------------- existing formats, real files, by hand

def test_counterfact_train_records_by_hand():
    path = shared_file("counterfact/easyedit_counterfact-train.json")
    assert detect_format(path) == "counterfact-easyedit"
    first, second = load_dataset("counterfact-easyedit", path, limit=2).cases
    assert first == Case(
        request=EditRequest("{}, the", "Toko Yasuda", "piano", "guitar"),
        rephrases=("Toko Yasuda is incredible at",),
        locality=(LocalityProbe("John Lennon performs on the", "guitar"),),
        case_id="2",
    )
    assert second == Case(
        request=EditRequest("{}, which is located in", "Autonomous University of Madrid", "Sweden", "Spain"),
        rephrases=("and Sallie Beavers Riley. Autonomous University of Madrid is located in",),
        locality=(LocalityProbe("Biure, which is located in", "Spain"),),
        case_id="3",
    )


def test_knowedit_zsre_test_records_by_hand():
    path = shared_file("knowedit/ZsRE/ZsRE-test-all.json")
    assert detect_format(path) == "knowedit"
    first, second = load_dataset("knowedit", path, limit=2).cases
    assert first == Case(
        request=EditRequest("Which family does {} belong to?", "Epaspidoceras", "Noctuidae", "Aspidoceratidae"),
        rephrases=("What family are Epaspidoceras?",),
        locality=(LocalityProbe("The taxon rank of Epaspidoceras is", "genus"),
                  LocalityProbe("Epaspidoceras taxon rank", "genus")),
        portability=(PortabilityProbe("What is the common name for the family Epaspidoceras belongs to?",
                                      "Owlet moths"),),
        case_id="0",
    )
    assert second == Case(
        request=EditRequest("What species is {} specific to?", "ZIC3", "male", "human"),
        rephrases=("In which living being can you find ZIC3?",),
        locality=(LocalityProbe("The strand orientation of ZIC3 is", "forward strand"),
                  LocalityProbe("ZIC3 strand orientation", "forward strand")),
        portability=(PortabilityProbe("What is the function of Zic family member 3?", "male"),),
        case_id="1",
    )


# ---------------------------------------------------------------- Yao et al. 2023 sets, real files, by hand

SPIKE = EditRequest("{} originates from", "Spike Hughes", "Philadelphia", "London")
SPIKE_NEIGHBOURS = ("Max Mosley originates from", "William Hogarth originated from",
                    "William Huggins originates from", "Quintin Hogg, Baron Hailsham of St Marylebone originates from",
                    "E. Phillips Oppenheim is native to", "Lita Ford was native to", "William Henry Perkin was born in",
                    "Kathryn Newton was born in", "Kathryn Newton was native to", "Aubrey de Grey is originally from")
SPIKE_REPHRASES = ("Incumbent Mayor Jim Suttle sought a second term in office. Spike Hughes is native to",
                   "Amateur Athletic Union (AAU). Spike Hughes was born in")
SPIKE_ONE_HOP = PortabilityProbe("What famous food is associated with the city where Spike Hughes originates from?",
                                 "Cheesesteaks", kind="one-hop")


def test_counterfact_distracting_neighbour_record_by_hand():
    path = shared_file(PL + "locality/distracting_neighbor/counterfact_distracting_neighbor.json")
    assert detect_format(path) == "counterfact-distracting"
    loaded = load_dataset("counterfact-distracting", path)
    assert (len(loaded.cases), loaded.problems) == (804, ())
    case = loaded.cases[0]
    assert case == Case(
        request=SPIKE,
        rephrases=SPIKE_REPHRASES,
        locality=(
            *(LocalityProbe(prompt, "London", kind="pre-neighbour") for prompt in SPIKE_NEIGHBOURS),
            # the same neighbours after the edit sentence, still answered by the old answer
            *(LocalityProbe(f"Spike Hughes originates from Philadelphia. {prompt}", "London",
                            kind="distract-neighbour") for prompt in SPIKE_NEIGHBOURS),
            LocalityProbe("What is Spike Hughes an instance of?", "human", kind="unrelated-attribute"),
        ),
        portability=(SPIKE_ONE_HOP,),
        case_id="4482",
    )
    assert [probe.kind for probe in case.locality] == ["pre-neighbour"] * 10 + ["distract-neighbour"] * 10 + [
        "unrelated-attribute"]
    # plain counterfact still reads the file, without the kinds or the new sections
    plain = load_dataset("counterfact", path, limit=1).cases[0]
    assert plain.locality == tuple(LocalityProbe(prompt, "London") for prompt in SPIKE_NEIGHBOURS)


def test_counterfact_one_hop_record_by_hand():
    path = shared_file(PL + "portability/one_hop/counterfact_portability_gpt4.json")
    assert detect_format(path) == "counterfact-one-hop"
    loaded = load_dataset("counterfact-one-hop", path)
    assert (len(loaded.cases), loaded.problems) == (1031, ())
    assert loaded.cases[0] == Case(
        request=SPIKE, rephrases=SPIKE_REPHRASES,
        locality=tuple(LocalityProbe(prompt, "London", kind="pre-neighbour") for prompt in SPIKE_NEIGHBOURS),
        portability=(SPIKE_ONE_HOP,), case_id="4482",
    )
    assert loaded.cases[1].portability == (PortabilityProbe(
        "In which Indian state is the original language of Mariana Pineda, Tamil, an official language?",
        "Tamil Nadu", kind="one-hop"),)


def test_counterfact_subject_replace_record_by_hand():
    path = shared_file(PL + "portability/subject_replace/counterfact_subject_replace.json")
    assert detect_format(path) == "counterfact-subject-replace"
    loaded = load_dataset("counterfact-subject-replace", path)
    assert (len(loaded.cases), loaded.problems) == (213, ())
    case = loaded.cases[0]
    assert case.case_id == "4496"
    assert case.request == EditRequest("{} passed away in", "May Wright Sewall", "Birmingham", "Indianapolis")
    assert case.rephrases == ("Regrets\nXI. May Wright Sewall succumbed at",
                              "He also appeared in 15 NHL games that season. May Wright Sewall's life ended in")
    assert case.locality[0] == LocalityProbe("Jake Weber succumbed at", "Indianapolis", kind="pre-neighbour")
    assert len(case.locality) == 10 and {probe.kind for probe in case.locality} == {"pre-neighbour"}
    # the edit prompt about the alternative subject "Mary Eliza Wright", answered by the new target
    assert case.portability == (PortabilityProbe("Mary Eliza Wright passed away in", "Birmingham",
                                                 kind="subject-replace"),)


def test_zsre_subject_replace_record_by_hand():
    path = shared_file(PL + "portability/subject_replace/zsre_subject_replace.json")
    assert detect_format(path) == "zsre-subject-replace"
    loaded = load_dataset("zsre-subject-replace", path)
    # 6 records whose subject is not in src (or is padded with spaces) are skipped, as by zsre
    assert (len(loaded.cases), len(loaded.problems)) == (287, 6)
    assert {problem.field for problem in loaded.problems} == {"src/subject"}
    assert loaded.cases[0] == Case(
        request=EditRequest("Which was the constellation for {}?", "NGC 3953", "Triangulum", "Ursa Major"),
        rephrases=("Which one was the constellation of NGC 3953?",),
        portability=(PortabilityProbe("What is the constellation of UGC 6870?", "Triangulum",
                                      kind="subject-replace"),),
        case_id="0",
    )


def test_zsre_inverse_relation_record_by_hand():
    path = shared_file(PL + "portability/inverse_relation/zsre_inverse_relation.json")
    assert detect_format(path) == "zsre-inverse-relation"
    loaded = load_dataset("zsre-inverse-relation", path)
    assert (len(loaded.cases), len(loaded.problems)) == (380, 5)
    assert loaded.cases[0] == Case(
        request=EditRequest("Who is {}'s sister?", "Claire Clairmont", "Marian Clairmont", "Mary Shelley"),
        rephrases=("Who's Claire Clairmont's sister?",),
        # the edit read backwards is answered by the edited subject
        portability=(PortabilityProbe("Who is Marian Clairmont's sister?", "Claire Clairmont",
                                      kind="inverse-relation"),),
        case_id="0",
    )
    assert loaded.cases[1].portability == (PortabilityProbe("Who is the son of Babur?", "Nebaioth",
                                                            kind="inverse-relation"),)


def test_piqa_commonsense_records_by_hand():
    shared_file(PL + "locality/commonsense_task/piqa_valid-labels.lst")
    path = shared_file(PL + "locality/commonsense_task/piqa_valid.jsonl")
    assert detect_format(path) == "piqa"
    loaded = load_dataset("piqa", path)
    assert (loaded.records_read, len(loaded.records), loaded.cases, loaded.problems) == (1838, 1838, (), ())
    first, second = loaded.records[:2]
    assert first == PiqaQuestion(
        "How do I ready a guinea pig cage for it's new occupants?",
        ("Provide the guinea pig with a cage full of a few inches of bedding made of ripped paper strips, you will "
         "also need to supply it with a water bottle and a food dish.",
         "Provide the guinea pig with a cage full of a few inches of bedding made of ripped jeans material, you will "
         "also need to supply it with a water bottle and a food dish."),
        0)
    # label 1: the second solution, whose trailing space the probe drops
    assert second == PiqaQuestion("dresser", ("replace drawer with bobby pin ", "finish, woodgrain with  bobby pin "), 1)
    assert second.probe() == LocalityProbe("dresser", "finish, woodgrain with  bobby pin", kind="commonsense")
    assert sum(question.label for question in loaded.records) == 928


def test_piqa_labels_are_checked_and_probes_dealt_over_cases(tmp_path):
    path = tmp_path / "piqa_small.jsonl"
    path.write_text("".join(json.dumps({"goal": f"goal {i}", "sol1": f"a{i}", "sol2": f"b{i}"}) + "\n"
                            for i in range(3)), encoding="utf-8")
    with pytest.raises(DataError, match=r"piqa_small-labels\.lst: the labels of .* are missing.*labels=PATH"):
        load_piqa(path)
    (tmp_path / "piqa_small-labels.lst").write_text("0\n1\n", encoding="utf-8")
    with pytest.raises(DataError, match="2 labels for the 3 records"):
        load_piqa(path)
    (tmp_path / "piqa_small-labels.lst").write_text("0\n2\n1\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 2 is '2', expected 0 or 1"):
        load_piqa(path)
    other = tmp_path / "labels.txt"
    other.write_text("0\n1\n1\n", encoding="utf-8")
    probes = [question.probe() for question in load_piqa(path, labels=other).records]
    assert probes == [LocalityProbe("goal 0", "a0", "commonsense"), LocalityProbe("goal 1", "b1", "commonsense"),
                      LocalityProbe("goal 2", "b2", "commonsense")]
    cases = (Case(EditRequest("{} is in", "Paris", "Italy"), locality=(LocalityProbe("Rome is in", "Italy"),)),
             Case(EditRequest("{} is in", "Berlin", "Spain")))
    dealt = deal_locality(cases, probes)
    assert dealt[0].locality == (LocalityProbe("Rome is in", "Italy"), probes[0], probes[2])
    assert dealt[1].locality == (probes[1],)


# ---------------------------------------------------------------- hand-written detection and requirements

CF_REWRITE = {"prompt": "{} originates from", "subject": "Spike Hughes",
              "target_new": {"str": "Philadelphia"}, "target_true": {"str": "London"}}
CF_BASE = {"case_id": 1, "requested_rewrite": CF_REWRITE, "paraphrase_prompts": ["Spike Hughes was born in"],
           "neighborhood_prompts": ["Max Mosley originates from"], "attribute_prompts": [], "generation_prompts": []}


@pytest.mark.parametrize(("extra", "expected"), [
    ({}, "counterfact"),
    ({"portability": {"New Question": "q?", "New Answer": "a"}}, "counterfact-one-hop"),
    ({"alternative_subject": "S. Hughes"}, "counterfact-subject-replace"),
    ({"portability": {"New Question": "q?", "New Answer": "a"}, "unrelated_relation": {"question": "q", "object": "o"},
      "distracting_neighborhood_prompts": ["x"]}, "counterfact-distracting"),
])
def test_detection_of_counterfact_variants(tmp_path, extra, expected):
    assert detect_format(write(tmp_path / "cf.json", [{**CF_BASE, **extra}] * 2)) == expected


def test_a_variant_requires_its_own_section(tmp_path):
    path = write(tmp_path / "cf.json", [CF_BASE, {**CF_BASE, "alternative_subject": "S. Hughes"}])
    loaded = load_dataset("counterfact-subject-replace", path)
    assert [(p.index, p.field) for p in loaded.problems] == [(0, "alternative_subject")]
    assert loaded.cases[0].portability == (PortabilityProbe("S. Hughes originates from", "Philadelphia",
                                                            kind="subject-replace"),)


def test_kinds_are_named_constants():
    assert LOCALITY_KINDS == ("pre-neighbour", "distract-neighbour", "unrelated-attribute", "commonsense")
    assert PORTABILITY_KINDS == ("one-hop", "subject-replace", "inverse-relation")


# ---------------------------------------------------------------- probe kinds in saved cases

def test_probe_kind_is_optional_and_kept_out_of_saved_records_when_none(tmp_path):
    plain = Case(EditRequest("{} is in", "Paris", "Italy", "France"),
                 locality=(LocalityProbe("Rome is in", "Italy"),), portability=(PortabilityProbe("p", "a"),))
    # exactly the dict written before probes had kinds (so run digests of old cases do not move)
    assert plain.to_dict()["locality"] == [{"prompt": "Rome is in", "answer": "Italy"}]
    assert plain.to_dict()["portability"] == [{"prompt": "p", "answer": "a"}]
    kinded = Case(plain.request, locality=(LocalityProbe("Rome is in", "Italy", kind="pre-neighbour"),),
                  portability=(PortabilityProbe("p", "a", kind="one-hop"),))
    assert kinded.to_dict()["locality"] == [{"prompt": "Rome is in", "answer": "Italy", "kind": "pre-neighbour"}]
    saved = tmp_path / "cases.json"
    saved.write_text(json.dumps([plain.to_dict(), kinded.to_dict()]), encoding="utf-8")
    assert load_cases(saved) == [plain, kinded]
    assert LocalityProbe("a", "b") == LocalityProbe("a", "b", None) != LocalityProbe("a", "b", "commonsense")
    with pytest.raises(RequestError, match="locality kind is empty"):
        LocalityProbe("a", "b", kind=" ")


# ---------------------------------------------------------------- documentation

def test_datasets_doc_lists_every_format():
    text = (Path(__file__).resolve().parents[1] / "docs" / "DATASETS.md").read_text(encoding="utf-8")
    assert all(f"`{name}`" in text for name in DATASETS)
