"""IKE: demonstration retrieval (hand-set embeddings, exact order), the exact context string, the
prompt-context hook in scoring and generation, bit-exact revert, stacking, save/load, errors."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import pytest
import torch

from kedit.errors import EditStateError, KeditError, KeditWarning
from kedit.methods import get_method, load_edit
from kedit.methods.ike import IKE, IKEEdit, IKEHparams, build_pool, case_demonstrations, nearest
from kedit.models.generation import generate
from kedit.models.scoring import score, top_next_tokens
from kedit.requests import Case, EditRequest, LocalityProbe

FACT = "New Fact: {fact}\nPrompt: {prompt} {answer}\n\n"

CASE_A = Case(EditRequest("{} is located in", "The Louvre", "Rome"), rephrases=("The Louvre sits in",),
              locality=(LocalityProbe("The Colosseum is located in", "Rome"),))
CASE_B = Case(EditRequest("{} plays the sport of", "Lionel Messi", "tennis"), rephrases=("Lionel Messi is a player of",),
              locality=(LocalityProbe("Michael Jordan plays the sport of", "basketball"),))
R1 = EditRequest("The mother tongue of {} is", "Danielle Darrieux", "English")
R2 = EditRequest("{} was a physicist who worked in", "Albert Einstein", "Tokyo")

A_COPY = "New Fact: The Louvre is located in Rome\nPrompt: The Louvre is located in Rome\n\n"
A_UPDATE = "New Fact: The Louvre is located in Rome\nPrompt: The Louvre sits in Rome\n\n"
A_RETAIN = "New Fact: The Louvre is located in Rome\nPrompt: The Colosseum is located in Rome\n\n"
B_COPY = "New Fact: Lionel Messi plays the sport of tennis\nPrompt: Lionel Messi plays the sport of tennis\n\n"
B_UPDATE = "New Fact: Lionel Messi plays the sport of tennis\nPrompt: Lionel Messi is a player of tennis\n\n"
B_RETAIN = ("New Fact: Lionel Messi plays the sport of tennis\nPrompt: Michael Jordan plays the sport of "
            "basketball\n\n")
R1_COPY = ("New Fact: The mother tongue of Danielle Darrieux is English\nPrompt: The mother tongue of Danielle "
           "Darrieux is English\n\n")
R2_COPY = ("New Fact: Albert Einstein was a physicist who worked in Tokyo\nPrompt: Albert Einstein was a "
           "physicist who worked in Tokyo\n\n")
R1_QUERY = "New Fact: The mother tongue of Danielle Darrieux is English\nPrompt: "
R2_QUERY = "New Fact: Albert Einstein was a physicist who worked in Tokyo\nPrompt: "


def polar(degrees: float, radius: float = 1.0) -> tuple[float, float]:
    return radius * math.cos(math.radians(degrees)), radius * math.sin(math.radians(degrees))


# Angles set by hand: cosine order is angular distance order (norms differ on purpose).
VECTORS = {
    A_COPY: polar(80), A_UPDATE: polar(10, 3.0), A_RETAIN: polar(50), B_COPY: polar(30, 5.0),
    B_UPDATE: polar(175), B_RETAIN: polar(60, 0.5), R1_COPY: polar(0, 2.0), R2_COPY: polar(90),
    "Danielle Darrieux speaks": polar(75), "Where did Einstein work?": polar(80),
    "Darrieux was born in": polar(20),
}


@dataclass
class ToyEmbedder:
    """Looks every text up in a table: an unknown text fails the test (the rendering was wrong)."""

    vectors: dict[str, tuple[float, ...]]
    name: str = "toy"
    calls: list[list[str]] = field(default_factory=list)

    def embed(self, texts):
        self.calls.append(list(texts))
        missing = [text for text in texts if text not in self.vectors]
        assert not missing, f"texts the test did not expect: {missing}"
        return torch.tensor([self.vectors[text] for text in texts], dtype=torch.float32)


def compute(requests, k=3, retrieval="fact", pool=(CASE_A, CASE_B), embedder=None, lm=None, **extra) -> IKEEdit:
    """An IKE edit for ``lm`` (the edit is bound to its fingerprint); without one, for a stand-in."""
    method = IKE(embedder=embedder or ToyEmbedder(VECTORS), pool_cases=pool)
    hparams = IKEHparams(k=k, retrieval=retrieval, **extra)
    return method.compute(lm or _FakeLM(), list(requests), hparams)


class _FakeLM:
    """compute only reads the source, fingerprint and device; retrieval needs no language model."""

    source = "fake"
    fingerprint = "0" * 64
    device = torch.device("cpu")


def test_demonstrations_of_a_case_are_copy_update_retain():
    assert case_demonstrations(CASE_A, FACT) == [("copy", A_COPY), ("update", A_UPDATE), ("retain", A_RETAIN)]
    pool = build_pool([CASE_A, CASE_B], ToyEmbedder(VECTORS), FACT)
    assert pool.texts == (A_COPY, A_UPDATE, A_RETAIN, B_COPY, B_UPDATE, B_RETAIN)
    assert torch.allclose(pool.embeddings.norm(dim=-1), torch.ones(6))


def test_nearest_orders_ascending_and_breaks_ties_by_index():
    similarities = torch.tensor([0.5, 0.9, 0.5, 0.1])
    assert nearest(similarities, 3) == [2, 0, 1]  # 0.9 is last (next to the query); tie 0 before 2 in rank
    assert nearest(similarities, 10) == [3, 2, 0, 1]
    assert nearest(similarities, 0) == []


def test_fact_retrieval_context_is_exact_and_needs_no_query_embedding():
    embedder = ToyEmbedder(VECTORS)
    edit = compute([R1], k=3, embedder=embedder)
    calls = len(embedder.calls)
    # nearest to R1's copy (0 deg): A_UPDATE 10, B_COPY 30, A_RETAIN 50; most similar last
    expected = A_RETAIN + B_COPY + A_UPDATE + R1_QUERY
    assert edit.contexts(["An unseen query", "The mother tongue of Danielle Darrieux is"]) == [expected, expected]
    assert len(embedder.calls) == calls  # one request, fact retrieval: queries are not embedded


def test_query_retrieval_uses_each_prompt():
    edit = compute([R1], k=3, retrieval="query")
    # query at 75 deg: A_COPY 80, B_RETAIN 60, A_RETAIN 50
    assert edit.contexts(["Danielle Darrieux speaks"]) == [A_RETAIN + B_RETAIN + A_COPY + R1_QUERY]
    # query at 20 deg: B_COPY 30 (10 away) and A_UPDATE 10 (10 away, tie: earlier pool row ranks first)
    assert edit.contexts(["Darrieux was born in"]) == [A_RETAIN + B_COPY + A_UPDATE + R1_QUERY]


def test_several_requests_choose_the_nearest_fact_and_offer_the_others_as_demonstrations():
    edit = compute([R1, R2], k=7)
    found = edit.retrieve(["Where did Einstein work?", "Darrieux was born in"])
    assert [r.request_index for r in found] == [1, 0]
    # R2 (90 deg): all of the pool plus R1's copy (0 deg), never R2's own copy, ascending similarity
    assert found[0].demonstrations == (R1_COPY, B_UPDATE, A_UPDATE, B_COPY, A_RETAIN, B_RETAIN, A_COPY)
    assert found[1].demonstrations == (B_UPDATE, R2_COPY, A_COPY, B_RETAIN, A_RETAIN, B_COPY, A_UPDATE)
    assert edit.contexts(["Where did Einstein work?"]) == ["".join(found[0].demonstrations) + R2_QUERY]


def test_k_zero_needs_no_pool():
    edit = compute([R1], k=0, pool=None)
    assert edit.contexts(["anything"]) == [R1_QUERY]


def test_apply_prefixes_scoring_and_generation_exactly_and_revert_is_bit_exact(lm):
    weights = {name: tensor.clone() for name, tensor in lm.model.state_dict().items()}
    pairs = [(R1.text, R1.target_new), ("The Colosseum is located in", "Rome"), (R1.text, "French")]
    before = score(lm, pairs)
    top_before = top_next_tokens(lm, [R1.text])
    edit = compute([R1], k=1, lm=lm)  # one demonstration: the text stays within the tiny models' 128 positions
    context = A_UPDATE + R1_QUERY
    assert edit.contexts([R1.text]) == [context]

    edit.apply(lm)
    assert edit.is_applied
    after = score(lm, pairs)
    top_after = top_next_tokens(lm, [R1.text])
    generated = generate(lm, [R1.text], max_new_tokens=5, seed=3)
    with pytest.raises(EditStateError):
        edit.apply(lm)
    edit.revert(lm)

    assert lm.prompt_contexts == ()
    assert after == score(lm, [(context + prompt, target) for prompt, target in pairs])
    assert after != before
    assert top_after == top_next_tokens(lm, [context + R1.text])
    expected_text = generate(lm, [context + R1.text], max_new_tokens=5, seed=3)[0]
    assert generated == [expected_text[len(context):]]
    assert score(lm, pairs) == before
    assert top_next_tokens(lm, [R1.text]) == top_before
    for name, tensor in lm.model.state_dict().items():
        assert torch.equal(tensor, weights[name]), name
    with pytest.raises(EditStateError):
        edit.revert(lm)


def test_contexts_stack_and_revert_in_reverse_order(make_lm):
    lm = make_lm("gpt2")
    first, second = compute([R1], k=1, lm=lm), compute([R2], k=1, lm=lm)
    first.apply(lm)
    second.apply(lm)
    query = "Where did Einstein work?"
    prefix_one, prefix_two = first.contexts([query])[0], second.contexts([query])[0]
    assert prefix_one == A_UPDATE + R1_QUERY and prefix_two == A_COPY + R2_QUERY
    assert lm.in_context([query]) == [prefix_one + prefix_two + query]
    with pytest.raises(EditStateError):
        first.revert(lm)
    second.revert(lm)
    assert lm.in_context([query]) == [prefix_one + query]
    first.revert(lm)
    assert lm.in_context([query]) == [query] and lm.prompt_contexts == ()


def test_save_load_round_trip(tmp_path):
    edit = compute([R1, R2], k=3, retrieval="query")
    queries = ["Where did Einstein work?", "Danielle Darrieux speaks"]
    edit.save(tmp_path / "edit")
    loaded = IKEEdit.load(tmp_path / "edit", embedder=ToyEmbedder(VECTORS))
    assert loaded.requests == edit.requests and loaded.hparams == edit.hparams
    assert loaded.pool.texts == edit.pool.texts and loaded.pool.kinds == edit.pool.kinds
    assert torch.equal(loaded.pool.embeddings, edit.pool.embeddings)
    assert torch.equal(loaded.request_embeddings, edit.request_embeddings)
    assert loaded.contexts(queries) == edit.contexts(queries)

    single = compute([R1], k=3)
    single.save(tmp_path / "single")
    generic = load_edit(tmp_path / "single")  # no embedder: one request, fact retrieval needs none
    assert isinstance(generic, IKEEdit) and not generic.is_applied
    assert generic.contexts(["anything"]) == single.contexts(["anything"])

    with pytest.raises(KeditError, match="embedded with"):
        IKEEdit.load(tmp_path / "edit", embedder=ToyEmbedder(VECTORS, name="other"))
    demos = tmp_path / "edit" / "demonstrations.json"
    demos.write_text(json.dumps({"texts": ["forged"], "kinds": ["copy"]}))
    with pytest.raises(KeditError, match="sha256"):
        IKEEdit.load(tmp_path / "edit")


def test_pool_file_gives_the_same_pool_as_cases(tmp_path, make_lm):
    path = tmp_path / "pool.json"
    path.write_text(json.dumps([CASE_A.to_dict(), CASE_B.to_dict()]))
    method = IKE(embedder=ToyEmbedder(VECTORS))
    hparams = method.default_hparams(make_lm("gpt2"), overrides={"pool_file": str(path), "k": 3})
    assert hparams.k == 3 and hparams.retrieval == "fact"
    edit = method.compute(_FakeLM(), [R1], hparams)
    assert edit.contexts(["x"]) == compute([R1], k=3).contexts(["x"])
    assert method.pool(hparams, method.embedder) is edit.pool  # embedded once per method object


def test_hparams_errors_and_easyedit_keys():
    with pytest.raises(KeditError, match="k must be"):
        IKEHparams(k=-1)
    with pytest.raises(KeditError, match="retrieval"):
        IKEHparams(retrieval="random")
    with pytest.raises(KeditError, match="demonstration_template"):
        IKEHparams(demonstration_template="{fact} {prompt}")
    with pytest.raises(KeditError, match="query_template"):
        IKEHparams(query_template="New Fact: {fact}\nPrompt: {prompt}")
    method = get_method("ike")
    assert method.batch_capable and "In-context" in method.summary
    assert method.default_hparams(None).k == 16
    assert method.default_hparams(None, overrides={"use_icl_examples": False}).k == 0
    assert method.default_hparams(None, overrides={"sentence_model_name": "./cache/all-MiniLM-L6-v2"}).embedder \
        == "all-MiniLM-L6-v2"
    with pytest.raises(KeditError, match="unknown hyperparameter"):
        method.default_hparams(None, overrides={"topk": 3})


def test_pool_errors(tmp_path):
    with pytest.raises(KeditError, match="pool_file"):
        compute([R1], k=2, pool=None)
    with pytest.raises(KeditError, match="no demonstrations"):
        compute([R1], k=2, pool=())
    with pytest.raises(KeditError, match="not both"):
        compute([R1], k=2, pool_file=str(tmp_path / "pool.json"))
    with pytest.raises(KeditError, match="does not exist"):
        compute([R1], k=2, pool=None, pool_file=str(tmp_path / "missing.json"))
    with pytest.warns(KeditWarning, match="also in the IKE demonstration pool"):
        compute([CASE_A.request], k=2)
    with pytest.warns(KeditWarning, match="only 6 demonstrations"):
        compute([R1], k=9)


@pytest.mark.slow
def test_minilm_embeddings():
    from kedit.methods.embeddings import MiniLMEmbedder

    embedder = MiniLMEmbedder.load()
    vectors = embedder.embed([
        "The mother tongue of Danielle Darrieux is French.",
        "Danielle Darrieux's native language is French.",
        "Basketball is played with a ball and two hoops.",
        "This is an example sentence",
    ])
    assert vectors.shape == (4, 384) and vectors.dtype == torch.float32
    assert torch.allclose(vectors.norm(dim=-1), torch.ones(4), atol=1e-5)
    cosines = vectors @ vectors.T
    assert cosines[0, 1] > 0.8 > 0.2 > cosines[0, 2]
    # sentence-transformers' all-MiniLM-L6-v2 vector of this sentence begins with these values
    reference = torch.tensor([0.0676569, 0.0634960, 0.0487131, 0.0793050, 0.0374481])
    assert torch.allclose(vectors[3, :5], reference, atol=1e-4)


def test_evaluate_measures_with_the_context_and_leaves_the_model_as_found(make_lm, tmp_path):
    from kedit.evaluate.evaluation import evaluate
    from kedit.evaluate.metrics import argmax_agreement, token_accuracy

    lm = make_lm("llama")
    case = Case(R1, locality=(LocalityProbe("The Colosseum is located in", "Rome"),))
    edit = compute([R1], k=1, lm=lm)
    context = edit.contexts(["any"])[0]
    record = evaluate(lm, [case], edit)[0]
    assert not edit.is_applied and lm.prompt_contexts == ()
    now = score(lm, [(context + R1.text, "English"), (context + "The Colosseum is located in", "Rome")])
    before = score(lm, [("The Colosseum is located in", "Rome")])[0]
    assert record["token"]["post"]["reliability"] == token_accuracy(now[0])
    assert record["token"]["post"]["locality"] == argmax_agreement(before, now[1])

    empty = compute([R1], k=0, pool=None)  # no pool: the saved embeddings are empty tensors
    empty.save(tmp_path / "k0")
    assert load_edit(tmp_path / "k0").contexts(["q"]) == [R1_QUERY]
