"""SERAC: the balanced BCE and SSS against hand computations, the asymmetric objective, a trained
classifier's routing decisions, routing inside score / top_next_tokens / generate (exactly the
counterfactual's numbers on the rewritten prompt, exactly the base model's elsewhere), bit-exact
revert, the edit memory's save/load and combine, refusal on another model, exact resume, and the
hard negatives (G.5 data.hard_neg: the neighbour band, the exp(sim/T) draw, its determinism and cache).

Everything runs on tiny random models: the tokenizer and causal LMs of tests/tiny_models.py and a
tiny random BERT classifier built here (a word-level vocabulary of the test sentences), so no
pretrained weights are read (the same tiny BERT stands in for MiniLM as the hard-negative embedder).
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import re
import warnings
from collections import Counter

import pytest
import torch

import kedit
from kedit.edits import EditStack
from kedit.errors import KeditError, KeditWarning
from kedit.methods import load_edit
from kedit.methods.serac import (
    SERAC,
    HardNegatives,
    MemoryRouter,
    SERACEdit,
    SERACHparams,
    SERACTrainee,
    balanced_bce,
    check_same_vocabulary,
    counterfactual_text,
    edit_terms,
    load_classifier,
    prompt_groups,
    runtime_for,
    top_neighbours,
)
from kedit.models import prepare_model
from kedit.models.generation import generate
from kedit.models.scoring import score, top_next_tokens
from kedit.requests import Case, EditRequest, LocalityProbe
from kedit.training import Schedule, TrainingData, load_artifact
from tests.tiny_models import SENTENCES, build_model

MESSI = EditRequest("{} plays the sport of", "Lionel Messi", "tennis")
EINSTEIN = EditRequest("{} was a physicist who worked in", "Albert Einstein", "Tokyo")
# More negatives for the training cases: the first 20 test sentences cut before their last word.
SENTENCE_PROBES = tuple(LocalityProbe(*sentence.rstrip(".").rsplit(" ", 1)) for sentence in SENTENCES[:20])
TRAIN = tuple(dataclasses.replace(case, locality=case.locality + SENTENCE_PROBES[4 * i:4 * i + 4]) for i, case in enumerate((
    Case(EditRequest("The mother tongue of {} is", "Danielle Darrieux", "English"),
         rephrases=("Danielle Darrieux speaks the language",), locality=(LocalityProbe("The Nile is a river in", "Africa"),)),
    Case(EINSTEIN, rephrases=("Albert Einstein worked in the city of",),
         locality=(LocalityProbe("The sun rises in the", "east"),)),
    Case(MESSI, rephrases=("Which sport does Lionel Messi play?",),
         locality=(LocalityProbe("Tokyo is the capital of", "Japan"),)),
    Case(EditRequest("{} is located in the city of", "The Eiffel Tower", "Rome"),
         rephrases=("Where is the Eiffel Tower?",), locality=(LocalityProbe("The Beatles were a band from", "Liverpool"),)),
    Case(EditRequest("{} is a river in", "The Amazon", "Europe"), rephrases=("The Amazon flows through",),
         locality=(LocalityProbe("Berlin is the capital of", "Germany"),)),
)))
VAL = (
    Case(EditRequest("{} was a chemist who lived in", "Marie Curie", "Berlin"),
         rephrases=("Marie Curie lived in the city of",), locality=(LocalityProbe("The Louvre is a museum in", "Paris"),)),
    Case(EditRequest("The official language of {} is", "Brazil", "Spanish"), rephrases=("In Brazil people speak",),
         locality=(LocalityProbe("Mount Everest is the highest mountain in the", "world"),)),
)
DATA = TrainingData(TRAIN, VAL, {"name": "tiny-serac", "path": "in-memory"})
PARAPHRASE = "Lionel Messi plays which sport?"  # not in the training data
UNRELATED = "A cat and a dog played in the garden"  # from SENTENCES[27], seen by no editor
# Fast settings for tiny models: one micro-batch of every case per step, large learning rates.
TRAIN_SETTINGS = {"train_batch_size": 5, "accumulate_steps": 1, "lr": 3e-3, "all_negatives": True}


@pytest.fixture(scope="session")
def bert_folder(tmp_path_factory):
    """A tiny random BERT (2 layers, width 32) whose vocabulary is the words of the test sentences."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    texts = [*SENTENCES, *(text for case in TRAIN + VAL for text in (case.request.text, *case.rephrases,
                                                                     *(p.prompt for p in case.locality))),
             PARAPHRASE, UNRELATED, "which sport does the play ?"]
    words = sorted({word for text in texts for word in re.findall(r"\w+|[^\w\s]", text.lower())})
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    tokenizer = BertTokenizerFast(vocab={word: index for index, word in enumerate(vocabulary)})
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocabulary), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# Hard negatives on 5 training cases: the band is neighbours 2–4 of the 4 other prompts (the paper's 26–100).
HARD_NEG_SETTINGS = {"hard_neg_neighbours": 4, "hard_neg_exclude": 1}


def settings(bert_folder, **extra) -> dict:
    return {"classifier": str(bert_folder), "hard_neg_embedder": str(bert_folder), **TRAIN_SETTINGS,
            **HARD_NEG_SETTINGS, **extra}


def tiny_lm(tokenizer, seed: int = 0):
    return prepare_model(build_model("llama", len(tokenizer), seed=seed), tokenizer, source="tiny-llama")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, kedit_home, tokenizer, bert_folder):
    """A SERAC editor trained for 40 steps on the tiny llama (in the session's cache folder)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("KEDIT_HOME", str(kedit_home))
            lm = tiny_lm(tokenizer)
            method = SERAC()
            hparams = method.default_hparams(lm, overrides=settings(bert_folder, scale_lr=3e-2))
            out = tmp_path_factory.mktemp("serac-train")
            artifact = method.train(lm, DATA, hparams, Schedule(max_steps=40, val_every=20, progress=False), out)
    finally:
        torch.set_num_threads(threads)
    return artifact, hparams


def edit_for(lm, trained, requests, **extra) -> SERACEdit:
    artifact, hparams = trained
    method = SERAC()
    chosen = method.default_hparams(lm, overrides=settings(hparams.classifier, scale_lr=3e-2,
                                                           artifact=str(artifact.folder), **extra))
    return method.compute(lm, list(requests), chosen)


# ------------------------------------------------------------------------------------- the losses


def test_balanced_bce_is_the_two_means_computed_by_hand():
    positive = torch.tensor([-0.1, -0.2])  # log s of in-scope pairs
    negative = torch.tensor([-1.0, -2.0, -3.0])
    expected = (0.1 + 0.2) / 2 - (math.log(1 - math.exp(-1)) + math.log(1 - math.exp(-2)) + math.log(1 - math.exp(-3))) / 3
    assert float(balanced_bce(positive, negative)) == pytest.approx(expected, rel=1e-6)
    # s = 1 on a negative (d = 0): float32 eps is added, the loss is finite
    assert math.isfinite(float(balanced_bce(positive, torch.tensor([0.0]))))


def test_sss_is_the_closed_form_gradient_norm_of_a_linear_head():
    torch.manual_seed(0)
    hidden = torch.randn(2, 4, 3, requires_grad=True)  # (B, T, d)
    weight = torch.randn(5, 3)  # (V, d): logits = h W^T
    labels = torch.tensor([[1, 4], [0, 2]])  # the last two columns predict two targets
    mask = torch.tensor([[True, True], [False, True]])  # row 1 has a one-token target
    terms = edit_terms(hidden, lambda h: h @ weight.T, labels, mask, sss_coef=0.9)
    # by hand: dL/dh_{b,t} = W^T (softmax(W h_{b,t}) - e_y) / N at the 3 target positions, 0 elsewhere
    with torch.no_grad():
        n, sss, nll = 3, 0.0, 0.0
        for b, column in ((0, 0), (0, 1), (1, 1)):
            h = hidden[b, 2 + column]
            p = torch.softmax(weight @ h, dim=0)
            nll += -float(torch.log(p[labels[b, column]]))
            sss += float(((weight.T @ (p - torch.nn.functional.one_hot(labels[b, column], 5).float())) / n).pow(2).sum())
    assert float(terms.cntr.detach()) == pytest.approx(nll / n, rel=1e-6)
    assert float(terms.sss.detach()) == pytest.approx(sss, rel=1e-5)
    assert float(terms.edit.detach()) == pytest.approx(0.9 * sss + 0.1 * nll / n, rel=1e-5)
    assert edit_terms(hidden, lambda h: h @ weight.T, labels, mask, 0.0).sss is None


def test_sss_changes_the_counterfactual_gradient_and_not_the_classifiers(tokenizer, bert_folder):
    lm = tiny_lm(tokenizer)
    hparams = SERACHparams(**settings(bert_folder))
    trainee = SERACTrainee(lm, TRAIN, VAL, hparams)
    examples = trainee.training_examples(1)[0]
    cntr = list(trainee.cntr_params.values())
    encoder = [p for p in trainee.classifier.encoder.parameters() if p.requires_grad]
    grads, terms = {}, {}
    for coef in (0.0, 0.9):
        terms[coef] = trainee.losses(examples, sss_coef=coef)
        grads[coef] = torch.autograd.grad(terms[coef].total, cntr + encoder, allow_unused=True)
    off, on = ({name: float(value.detach()) for name, value in (("total", t.total), ("cntr", t.edit.cntr),
                                                                  ("cls", t.cls), ("sss", t.edit.sss))
                if value is not None} for t in (terms[0.0], terms[0.9]))
    # L = cedit (C SSS + (1 - C) L_cntr) + cloc L_cls: SSS sits inside the cedit term
    assert off["total"] == pytest.approx(0.1 * off["cntr"] + 1.0 * off["cls"], rel=1e-6) and "sss" not in off
    assert on["total"] == pytest.approx(0.1 * (0.9 * on["sss"] + 0.1 * on["cntr"]) + on["cls"], rel=1e-6)
    assert on["sss"] > 0 and on["cntr"] == off["cntr"]
    differs = [not torch.allclose(a, b) for a, b in zip(grads[0.0][:len(cntr)], grads[0.9][:len(cntr)], strict=True)]
    assert sum(differs) > len(cntr) // 2
    for a, b in zip(grads[0.0][len(cntr):], grads[0.9][len(cntr):], strict=True):
        assert (a is None and b is None) or torch.equal(a, b)


# ------------------------------------------------------------------------------------- the classifier


def test_a_briefly_trained_classifier_routes_a_paraphrase_to_its_entry_and_an_unrelated_prompt_past(bert_folder):
    torch.manual_seed(0)
    classifier = load_classifier(SERACHparams(classifier=str(bert_folder)))
    classifier.requires_grad_(True)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=3e-3)
    keys = [case.request.text for case in TRAIN]  # 5 memory keys, their rephrases as positives,
    positives = [case.rephrases[0] for case in TRAIN]  # and as negatives for every key: the locality
    negatives = [case.locality[0].prompt for case in TRAIN] + SENTENCES[:12]  # prompts and 12 sentences
    for _ in range(40):
        vectors = classifier.embed(keys + positives + negatives)
        k, pos, neg = vectors[:5], vectors[5:10], vectors[10:]
        loss = balanced_bce(classifier.paired_log_similarity(pos, k), classifier.log_similarity(neg, k).flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss.detach()) < 0.1
    classifier.requires_grad_(False)

    class Runtime:  # a runtime whose counterfactual is a stand-in: only the decisions are checked
        counterfactual = object()

        def __init__(self, classifier):
            self.classifier = classifier

        def embed(self, texts):
            with torch.no_grad():
                return classifier.embed(texts)

    runtime = Runtime(classifier)
    memory = [MESSI, EINSTEIN]
    router = MemoryRouter(runtime, memory, runtime.embed([r.text for r in memory]), threshold=0.5)
    routes = router([PARAPHRASE, UNRELATED, EINSTEIN.text])
    assert routes[0] == (runtime.counterfactual, counterfactual_text(MESSI, PARAPHRASE))
    assert routes[0][1] == "Lionel Messi plays the sport of tennis Lionel Messi plays which sport?"
    assert routes[1] is None
    assert routes[2] == (runtime.counterfactual, counterfactual_text(EINSTEIN, EINSTEIN.text))
    sims, _ = router.scores([PARAPHRASE, UNRELATED])
    assert float(sims[0]) > 0.5 > float(sims[1])


def test_ties_go_to_the_later_memory_entry():
    class Flat:
        counterfactual = "cf"

        class classifier:  # noqa: N801 - stands in for the classifier's log_similarity
            @staticmethod
            def log_similarity(queries, keys):
                return torch.zeros((queries.shape[0], keys.shape[0]))

        def embed(self, texts):
            return torch.zeros((len(texts), 2))

    first, second = MESSI, EditRequest("{} plays the sport of", "Lionel Messi", "golf")
    router = MemoryRouter(Flat(), [first, second], torch.zeros((2, 2)), threshold=0.5)
    assert router([MESSI.text]) == [("cf", counterfactual_text(second, MESSI.text))]


# ----------------------------------------------------------------------------- routing inside scoring


def test_routed_prompts_get_the_counterfactuals_scores_and_the_rest_the_base_models(make_lm, trained):
    lm = make_lm("llama")
    edit = edit_for(lm, trained, [MESSI, EINSTEIN])
    pairs = [(PARAPHRASE, "tennis"), (UNRELATED, "Vienna"), (EINSTEIN.text, "Tokyo"), (UNRELATED, "Budapest"),
             (MESSI.text, "football")]
    before_state, before = lm.state_fingerprint(), score(lm, pairs)
    edit.apply(lm)
    assert lm.state_fingerprint() != before_state and lm.overlays == (edit.content_digest(),)
    routes = lm.route([prompt for prompt, _ in pairs])
    assert [route is not None for route in routes] == [True, False, True, False, True]
    cf = routes[0][0]
    assert cf is not lm and all(route[0] is cf for route in routes if route is not None)
    assert [route[1] for route in routes if route is not None] == [
        counterfactual_text(MESSI, PARAPHRASE), counterfactual_text(EINSTEIN, EINSTEIN.text),
        counterfactual_text(MESSI, MESSI.text)]
    edited = score(lm, pairs)
    routed = score(cf, [(routes[i][1], pairs[i][1]) for i in (0, 2, 4)])
    edit.revert(lm)
    unrouted = score(lm, [pairs[1], pairs[3]])
    assert [edited[i] for i in (0, 2, 4)] == routed
    assert [edited[i] for i in (1, 3)] == unrouted == [before[1], before[3]]
    assert edited[0] != before[0]
    # revert: the base model's behaviour and state, bit for bit
    assert score(lm, pairs) == before and lm.state_fingerprint() == before_state
    assert lm.routers == () and lm.overlays == ()


def test_top_next_tokens_and_generation_are_routed_too(make_lm, trained):
    lm = make_lm("llama")
    edit = edit_for(lm, trained, [MESSI])
    prompts = [PARAPHRASE, UNRELATED]
    base_top, base_text = top_next_tokens(lm, [UNRELATED], k=3), generate(lm, [UNRELATED], max_new_tokens=4)
    edit.apply(lm)
    cf = lm.route(prompts)[0][0]
    rewritten = counterfactual_text(MESSI, PARAPHRASE)
    assert top_next_tokens(lm, prompts, k=3) == top_next_tokens(cf, [rewritten], k=3) + base_top
    texts = generate(lm, prompts, max_new_tokens=4)
    continuation = generate(cf, [rewritten], max_new_tokens=4)[0][len(rewritten):]
    assert texts == [PARAPHRASE + continuation, base_text[0]]
    edit.revert(lm)


# -------------------------------------------------------------------------- the edit kind and its life


def test_save_load_round_trip_gives_the_same_memory_and_scores(make_lm, trained, tmp_path):
    lm = make_lm("llama")
    edit = edit_for(lm, trained, [MESSI, EINSTEIN])
    pairs = [(PARAPHRASE, "tennis"), (UNRELATED, "Vienna")]
    edit.apply(lm)
    edited, state = score(lm, pairs), lm.state_fingerprint()
    edit.revert(lm)
    folder = edit.save(tmp_path / "edit")
    manifest = json.loads((folder / "edit.json").read_text())
    assert manifest["kind"] == "edit-memory" and manifest["artifact"]["digest"] == edit.artifact_digest
    loaded = load_edit(folder)
    assert isinstance(loaded, SERACEdit) and loaded.requests == edit.requests
    assert loaded.content_digest() == edit.content_digest()
    fresh = make_lm("llama")  # builds its own runtime from the artifact
    loaded.apply(fresh)
    assert score(fresh, pairs) == edited and fresh.state_fingerprint() == state
    loaded.revert(fresh)
    assert SERACEdit.export_refusal and "weight" in SERACEdit.export_refusal
    (folder / "memory.safetensors").write_bytes(b"truncated")
    with pytest.raises(KeditError, match="does not match the sha256"):
        load_edit(folder)


def test_edits_kept_in_sequence_are_one_memory_over_their_requests(make_lm, trained):
    lm = make_lm("llama")
    first, second = edit_for(lm, trained, [MESSI]), edit_for(lm, trained, [EINSTEIN])
    combined = SERACEdit.combine([first, second])
    assert combined.requests == (MESSI, EINSTEIN)
    assert torch.equal(combined.memory_embeddings, torch.cat([first.memory_embeddings, second.memory_embeddings]))
    with EditStack(lm) as stack:
        stack.push(first)
        stack.push(second)
        assert len(lm.routers) == 1 and len(stack) == 2
        installed = stack.layers[-1].installed
        assert installed.requests == (MESSI, EINSTEIN)
        assert lm.state_fingerprint() != lm.fingerprint
        routes = lm.route([EINSTEIN.text, MESSI.text])
        assert [route[1] for route in routes] == [counterfactual_text(EINSTEIN, EINSTEIN.text),
                                                  counterfactual_text(MESSI, MESSI.text)]
        assert stack.pop() is second  # only Messi's entry is left: Einstein's prompt is out of its scope
        cf = routes[0][0]
        assert lm.route([EINSTEIN.text, MESSI.text]) == [None, (cf, counterfactual_text(MESSI, MESSI.text))]
    assert lm.routers == () and lm.overlays == ()
    stack.verify_restored()
    other = edit_for(lm, trained, [MESSI], route_threshold=0.9)
    with pytest.raises(KeditError, match="different settings"):
        SERACEdit.combine([first, other])


def test_kedit_edit_computes_a_memory_edit_and_checks_its_outcome(make_lm, trained):
    lm = make_lm("llama")
    artifact, hparams = trained
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KeditWarning)  # a 40-step tiny editor need not reach the targets
        edit = kedit.edit(lm, "serac", [MESSI], apply=False, artifact=str(artifact.folder), classifier=hparams.classifier,
                          scale_lr=3e-2, hard_neg_embedder=hparams.hard_neg_embedder, **TRAIN_SETTINGS,
                          **HARD_NEG_SETTINGS)
    assert isinstance(edit, SERACEdit) and isinstance(edit.info["targets_reached"], list)
    assert lm.routers == () and lm.overlays == ()


# ------------------------------------------------------------------------------ the trained artifact


def test_the_artifact_holds_the_trained_tensors_and_is_refused_on_another_model(make_lm, trained):
    artifact, hparams = trained
    tensors = artifact.tensors()
    assert "classifier.log_scale" in tensors and any(n.startswith("counterfactual.") for n in tensors)
    assert float(tensors["classifier.log_scale"]) != 0.0  # the scale was learned (initialised to 1)
    manifest = load_artifact(artifact.folder).manifest
    assert "artifact" not in manifest.training_hparams and "route_threshold" not in manifest.training_hparams
    assert manifest.training["last_val"]["val_route_acc"] >= 0.5
    other = make_lm("llama", seed=1)
    with pytest.raises(KeditError, match="was trained on tiny-llama"):
        edit_for(other, trained, [MESSI])
    lm = make_lm("llama")
    with pytest.raises(KeditError, match="other hyperparameters"):
        edit_for(lm, trained, [MESSI], lr=1e-4)
    runtime = runtime_for(lm, artifact, hparams)
    assert runtime is runtime_for(lm, artifact, hparams)  # built once per model


def test_only_the_chosen_blocks_are_trained_and_stored(tokenizer, bert_folder, tmp_path, kedit_home):
    lm = tiny_lm(tokenizer)
    hparams = SERACHparams(**settings(bert_folder, cntr_layers=(2,)))
    trainee = SERACTrainee(lm, TRAIN, VAL, hparams)
    block = lm.anatomy.block_paths[2] + "."
    assert trainee.cntr_params and all(name.startswith(block) for name in trainee.cntr_params)
    before = {name: p.detach().clone() for name, p in trainee.counterfactual.model.named_parameters()}
    trainee.step(1)
    changed = {name for name, p in trainee.counterfactual.model.named_parameters() if not torch.equal(p, before[name])}
    assert changed and all(name.startswith(block) for name in changed)
    stored = {name for name in trainee.artifact_tensors() if name.startswith("counterfactual.")}
    assert stored == {"counterfactual." + name for name in trainee.cntr_params}


def test_a_resumed_run_repeats_the_uninterrupted_one_step_for_step(tokenizer, bert_folder, tmp_path, monkeypatch):
    import kedit.methods.serac as serac

    method = SERAC()

    def run(folder, steps):
        lm = tiny_lm(tokenizer)
        hparams = method.default_hparams(lm, overrides=settings(bert_folder, train_batch_size=2, accumulate_steps=2))
        return method.train(lm, DATA, hparams, Schedule(max_steps=steps, val_every=2, progress=False), folder)

    def log(folder):
        return [json.loads(line) for line in (folder / "train-log.jsonl").read_text().splitlines()]

    run(tmp_path / "whole", 4)
    run(tmp_path / "parts", 2)
    tables = list((tmp_path / "parts").glob("serac-hard-negatives-*.safetensors"))
    assert len(tables) == 1  # the neighbour table, computed once, in the training folder

    def no_embedding(*args, **kwargs):
        raise AssertionError("a resumed run recomputed the hard-negative embeddings")

    monkeypatch.setattr(serac, "load_sentence_embedder", no_embedding)
    resumed = run(tmp_path / "parts", 4)
    whole, parts = log(tmp_path / "whole"), log(tmp_path / "parts")
    assert [entry for entry in whole if "loss" in entry] == [entry for entry in parts if "loss" in entry]
    assert len([entry for entry in whole if "loss" in entry]) == 4
    hard = [entry["hard_neg"] for entry in whole if "loss" in entry]
    assert any(value > 0 for value in hard)  # hard negatives were on (hard_neg_prob 0.5, 2 micro-batches a step)
    assert [e["validation"] for e in whole if "validation" in e] == [e["validation"] for e in parts if "validation" in e]
    assert resumed.manifest.training["resumed_from"] == 2
    expected = load_artifact(tmp_path / "whole").tensors()
    assert all(torch.equal(value, expected[name]) for name, value in resumed.tensors().items())


# ------------------------------------------------------------------------------------ hard negatives


def test_the_neighbour_band_skips_the_case_itself_and_its_own_prompt_and_pads_a_short_row():
    # 6 prompts; prompt 5 is prompt 0's text again (another case with the same prompt): never a neighbour of 0
    groups = prompt_groups(["Who is a?", "b", "c", "d", "e", "who is  A?"])
    assert groups.tolist() == [0, 1, 2, 3, 4, 0]
    similarity = torch.tensor([[1.0, 0.9, 0.2, 0.7, 0.5, 0.99],  # row of prompt 0
                               [0.2, 0.3, 1.0, 0.8, 0.1, 0.6],  # prompt 2
                               [0.99, 0.4, 0.6, 0.1, 0.3, 1.0]])  # prompt 5
    indices, sims = top_neighbours(similarity, torch.tensor([0, 2, 5]), groups, k=4)
    assert indices.tolist() == [[1, 3, 4, 2], [3, 5, 1, 0], [2, 1, 4, 3]]
    assert sims[0].tolist() == pytest.approx([0.9, 0.7, 0.5, 0.2])
    # neighbours 4 minus the nearest 1: ranks 2-4 (the paper's 26-100)
    bands = HardNegatives.from_table(indices, sims, exclude=1, temperature=0.1)
    assert bands.candidates == ((3, 4, 2), (5, 1, 0), (1, 4, 3))
    # k beyond the 4 candidates of prompt 0: padded, and the padding is never drawn
    indices, sims = top_neighbours(similarity[:1], torch.tensor([0]), groups, k=5)
    assert indices.tolist() == [[1, 3, 4, 2, -1]] and sims[0, 4] == -math.inf
    assert HardNegatives.from_table(indices, sims, exclude=1, temperature=0.1).candidates == ((3, 4, 2),)


def test_a_hard_negative_is_drawn_in_proportion_to_exp_sim_over_t():
    indices = torch.tensor([[7, 3, 9, 4]])
    sims = torch.tensor([[0.9, 0.5, 0.4, 0.3]])
    bands = HardNegatives.from_table(indices, sims, exclude=1, temperature=0.1)
    assert bands.candidates == ((3, 9, 4),)
    weights = [math.exp(0.5 / 0.1), math.exp(0.4 / 0.1), math.exp(0.3 / 0.1)]
    total = sum(weights)
    assert [c / bands.cumulative[0][-1] for c in bands.cumulative[0]] == pytest.approx(
        [weights[0] / total, (weights[0] + weights[1]) / total, 1.0], rel=1e-6)  # float32 sims
    # a fixed seed against the hand computation: one rng.random() picks the first candidate whose
    # cumulative probability exceeds it
    for seed in range(20):
        u = random.Random(f"{seed}:7").random()
        expected = 3 if u < weights[0] / total else 9 if u < (weights[0] + weights[1]) / total else 4
        assert bands.draw(0, random.Random(f"{seed}:7")) == expected
    # statistically, at T = 0.25: p ∝ (1, e^-0.4, e^-0.8)
    bands = HardNegatives.from_table(indices, sims, exclude=1, temperature=0.25)
    rng = random.Random(0)
    counts = Counter(bands.draw(0, rng) for _ in range(20000))
    p = [1.0, math.exp(-0.4), math.exp(-0.8)]
    for index, weight in zip((3, 9, 4), p, strict=True):
        assert counts[index] / 20000 == pytest.approx(weight / sum(p), abs=0.015)
    assert HardNegatives(((),), ((),)).draw(0, rng) is None  # an empty band: no hard negative


def test_hard_negatives_are_the_band_of_the_frozen_embedders_neighbours_drawn_from_seed_and_step(
        tokenizer, bert_folder, tmp_path, monkeypatch):
    import kedit.methods.serac as serac

    lm = tiny_lm(tokenizer)
    hparams = SERACHparams(**settings(bert_folder, hard_neg_prob=1.0, train_batch_size=3, accumulate_steps=3))
    trainee = SERACTrainee(lm, TRAIN, VAL, hparams, cache_folder=tmp_path)
    trainee.prepare()
    # the band by hand: ranks 2-4 of the cosines of the frozen embedder's vectors, the case itself left out
    with torch.no_grad():
        vectors = serac.load_sentence_embedder(str(bert_folder)).embed([case.request.text for case in TRAIN])
    cosine = vectors @ vectors.T
    for i in range(len(TRAIN)):
        others = sorted((j for j in range(len(TRAIN)) if j != i), key=lambda j: -float(cosine[i, j]))
        assert trainee.hard_negatives.candidates[i] == tuple(others[1:4])
        assert i not in trainee.hard_negatives.candidates[i]
    prompts = [case.request.text for case in TRAIN]
    for step in (1, 2, 3):
        for batch in trainee.training_examples(step):
            for example in batch:
                own = prompts.index(example.request.text)
                band = {prompts[j] for j in trainee.hard_negatives.candidates[own]}
                assert example.hard and example.negative in band and example.negative != example.request.text
    # deterministic in (seed, step): again, and in a fresh trainee that reads the cached table (no embedding)
    monkeypatch.setattr(serac, "load_sentence_embedder", lambda *a, **k: pytest.fail("the table was recomputed"))
    fresh = SERACTrainee(lm, TRAIN, VAL, hparams, cache_folder=tmp_path)
    draws = {step: trainee.training_examples(step) for step in range(1, 6)}
    assert all(trainee.training_examples(step) == fresh.training_examples(step) == draws[step] for step in draws)
    assert len({json.dumps([[e.negative for e in batch] for batch in draws[step]]) for step in draws}) > 1
    other_seed = SERACTrainee(lm, TRAIN, VAL, dataclasses.replace(hparams, seed=1), cache_folder=tmp_path)
    assert any(other_seed.training_examples(step) != draws[step] for step in draws)
    # probability 0: no table is built, no example is hard
    off = SERACTrainee(lm, TRAIN, VAL, dataclasses.replace(hparams, hard_neg_prob=0.0), cache_folder=tmp_path / "off")
    off.prepare()
    assert not (tmp_path / "off").exists()
    assert not any(e.hard for batch in off.training_examples(1) for e in batch)
    # probability 0.5: one coin per micro-batch, so a batch is all hard or all ordinary
    half = SERACTrainee(lm, TRAIN, VAL, dataclasses.replace(hparams, hard_neg_prob=0.5), cache_folder=tmp_path)
    kinds = [{e.hard for e in batch} for step in range(1, 11) for batch in half.training_examples(step)]
    assert all(len(kind) == 1 for kind in kinds) and {True} in kinds and {False} in kinds


def test_subject_negatives_ask_the_entrys_subject_with_a_far_template_and_are_off_by_default(
        tokenizer, bert_folder, tmp_path):
    import kedit.methods.serac as serac

    lm = tiny_lm(tokenizer)
    # the templates the frozen encoder compares, by hand: the prompt with its subject taken out
    templates = [case.request.prompt.replace("{}", "something") for case in TRAIN]
    with torch.no_grad():
        vectors = serac.load_sentence_embedder(str(bert_folder)).embed(templates)
    cosine = vectors @ vectors.T
    others_cos = cosine + torch.eye(len(TRAIN)) * 10  # the case itself never qualifies
    # a bound every case has a far-enough template under, but not every pair: the filter is doing work
    max_cos = float(others_cos.min(dim=1).values.max()) + 1e-4
    assert bool((cosine >= max_cos).sum() > len(TRAIN))
    hparams = SERACHparams(**settings(bert_folder, hard_neg_prob=0.0, subject_neg_prob=1.0, subject_neg_max_cos=max_cos,
                                      train_batch_size=3, accumulate_steps=2))
    trainee = SERACTrainee(lm, TRAIN, VAL, hparams, cache_folder=tmp_path)
    trainee.prepare()
    requests = [case.request for case in TRAIN]
    seen = 0
    for step in (1, 2, 3):
        for batch in trainee.training_examples(step):
            for example in batch:
                assert example.subject and not example.hard
                own = requests.index(example.request)
                # the entry's own subject put into another case's question whose template is far from its own
                others = [j for j in range(len(TRAIN)) if j != own and float(cosine[own, j]) < max_cos
                          and requests[j].prompt.replace("{}", example.request.subject) == example.negative]
                assert others, example.negative
                assert example.request.subject in example.negative and example.negative != example.request.text
                seen += 1
    assert seen == 3 * 2 * 3
    # max_cos below every cosine: no template qualifies, each case falls back to its ordinary negative
    strict = SERACTrainee(lm, TRAIN, VAL, dataclasses.replace(hparams, subject_neg_max_cos=-0.99), cache_folder=tmp_path)
    assert not any(e.subject for batch in strict.training_examples(1) for e in batch)
    # probability 0 (the default, the paper): no template is embedded and the draws are the unchanged ones
    assert SERACHparams().subject_neg_prob == 0.0
    off_hparams = dataclasses.replace(hparams, subject_neg_prob=0.0)
    off = SERACTrainee(lm, TRAIN, VAL, off_hparams, cache_folder=tmp_path / "off")
    off.prepare()
    assert not (tmp_path / "off").exists()
    plain = SERACTrainee(lm, TRAIN, VAL, dataclasses.replace(off_hparams, subject_neg_max_cos=0.3), cache_folder=tmp_path)
    assert off.training_examples(4) == plain.training_examples(4)
    assert not any(e.subject for batch in off.training_examples(4) for e in batch)
    # validation reports how many subject negatives stay away from the memory, outside val_loss
    loose = SERACTrainee(lm, TRAIN, VAL, dataclasses.replace(hparams, subject_neg_max_cos=1.0), cache_folder=tmp_path)
    assert [e.negative for e in loose.validation_subject_examples()] == [
        "The official language of Marie Curie is", "Brazil was a chemist who lived in"]
    metrics = loose.validate()
    assert metrics["val_route_subject_acc"] in (0.0, 0.5, 1.0)
    assert "val_route_subject_acc" not in off.validate()


def test_hard_negative_settings_that_cannot_work_are_refused(tokenizer, bert_folder):
    with pytest.raises(KeditError, match="hard_neg_exclude < hard_neg_neighbours"):
        SERACHparams(hard_neg_neighbours=4, hard_neg_exclude=4)
    with pytest.raises(KeditError, match="hard_neg_prob"):
        SERACHparams(hard_neg_prob=1.5)
    with pytest.raises(KeditError, match="hard_neg_temperature"):
        SERACHparams(hard_neg_temperature=0.0)
    with pytest.raises(KeditError, match="subject_neg_prob"):
        SERACHparams(subject_neg_prob=-0.1)
    lm = tiny_lm(tokenizer)
    with pytest.raises(KeditError, match="5 training cases"):  # the paper's 100 neighbours of 5 cases
        SERACTrainee(lm, TRAIN, VAL, SERACHparams(classifier=str(bert_folder)))
    SERACTrainee(lm, TRAIN, VAL, SERACHparams(classifier=str(bert_folder), hard_neg_prob=0.0))


# ------------------------------------------------------------------------------------ hyperparameters


def test_hyperparameters_that_cannot_work_are_refused(tokenizer, bert_folder):
    with pytest.raises(KeditError, match="sss_coef"):
        SERACHparams(sss_coef=1.5)
    with pytest.raises(KeditError, match="frozen"):
        SERACHparams(cntr_layers=(), sss_coef=0.9)
    with pytest.raises(KeditError, match="classifier_pooling"):
        SERACHparams(classifier_pooling="max")
    with pytest.raises(KeditError, match="accumulate_steps"):
        SERAC().default_hparams(None, overrides={"accumulate_steps": 0})
    lm = tiny_lm(tokenizer)
    with pytest.raises(KeditError, match="blocks"):
        SERACTrainee(lm, TRAIN, VAL, SERACHparams(**settings(bert_folder, cntr_layers=(7,))))
    method = SERAC()
    assert method.default_hparams(None, overrides={"accumulate_bs": 3, "cedit": 0.5}).edit_coef == 0.5
    keys = set(method.training_hparams(SERACHparams()))
    assert {"artifact", "route_threshold", "allow_training_overlap"}.isdisjoint(keys) and "sss_coef" in keys


def test_a_counterfactual_with_another_vocabulary_is_refused(tokenizer, bert_folder):
    from transformers import AutoTokenizer

    bert = AutoTokenizer.from_pretrained(bert_folder)
    with pytest.raises(KeditError, match="another vocabulary"):
        check_same_vocabulary(tokenizer, bert, "tiny-bert")
    check_same_vocabulary(tokenizer, tokenizer, "itself")


def test_a_smaller_counterfactual_model_sharing_the_vocabulary_is_trained_and_used(tokenizer, bert_folder, tmp_path,
                                                                                    make_lm):
    small = build_model("llama", len(tokenizer), seed=3, num_layers=1)
    small.save_pretrained(tmp_path / "small")
    tokenizer.save_pretrained(tmp_path / "small")
    lm = make_lm("llama")
    method = SERAC()
    options = settings(bert_folder, counterfactual=str(tmp_path / "small"))
    artifact = method.train(lm, DATA, method.default_hparams(lm, overrides=options),
                            Schedule(max_steps=2, val_every=2, progress=False), tmp_path / "train")
    edit = method.compute(lm, [MESSI], method.default_hparams(lm, overrides=options | {"artifact": str(artifact.folder)}))
    edit.apply(lm)
    cf = lm.route([MESSI.text])[0][0]
    assert len(cf.anatomy.block_paths) == 1 and cf.tokenizer is lm.tokenizer
    trained = artifact.tensors()
    assert all(torch.equal(cf.model.get_parameter(name.removeprefix("counterfactual.")), value)
               for name, value in trained.items() if name.startswith("counterfactual."))
    edit.revert(lm)
