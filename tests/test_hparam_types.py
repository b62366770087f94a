"""Hyperparameter values are checked against their field types and ranges wherever they come from."""

from __future__ import annotations

import pytest

from kedit.errors import KeditError
from kedit.methods.base import get_method


@pytest.mark.parametrize(("method", "overrides", "message"), [
    ("rome", {"v_lr": "abc"}, "v_lr (ROMEHparams, from the overrides (--set or keyword arguments)) must be a finite number"),
    ("rome", {"layer": "x"}, "layer (ROMEHparams, from the overrides (--set or keyword arguments)) must be an integer or null"),
    ("rome", {"mom2_adjustment": "yes"}, "must be true or false"),
    ("memit", {"layers": [4, "five"]}, "must be a list of an integer or null"),
    ("memit", {"v_num_grad_steps": 2.5}, "must be an integer"),
    ("memit", {"z_chunk_token_budget": 0}, "must be >= 1"),
    ("memit", {"layer_fraction": 1.5}, "must be between 0 and 1"),
    ("alphaedit", {"nullspace_threshold": -0.1}, "must be >= 0"),
    ("ft-l", {"lr": 0}, "must be > 0"),
    ("ft-l", {"lr": float("nan")}, "must be a finite number"),
    ("ft-m", {"sss_coef": -0.5}, "must be >= 0"),
    ("ike", {"k": -1}, "must be >= 0"),
])
def test_python_api_overrides_are_checked(method, overrides, message):
    with pytest.raises(KeditError) as caught:
        get_method(method).default_hparams(None, None, overrides)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_yaml_file_values_are_checked_and_the_file_is_named(tmp_path):
    path = tmp_path / "rome.yaml"
    path.write_text("v_lr: fast\n")
    with pytest.raises(KeditError, match=f"v_lr \\(ROMEHparams, from {path}\\) must be a finite number, got 'fast'"):
        get_method("rome").default_hparams(None, path)


def test_values_are_converted_where_nothing_is_lost():
    hparams = get_method("rome").default_hparams(None, None, {"mom2_tokens": 1e5, "v_lr": 1,
                                                               "context_template_length_params": [[5, 5]]})
    assert hparams.mom2_tokens == 100_000 and isinstance(hparams.mom2_tokens, int)
    assert hparams.v_lr == 1.0 and isinstance(hparams.v_lr, float)
    assert hparams.context_template_length_params == ((5, 5),)
    assert get_method("ike").default_hparams(None, None, {"k": 0}).k == 0
    # EasyEdit's "no bound"
    assert get_method("ft-l").default_hparams(None, None, {"norm_constraint": False}).norm_constraint is None


def test_directly_built_fine_tuning_hparams_are_checked_the_same_way():
    from kedit.methods.ft import FTMHparams

    with pytest.raises(KeditError, match="num_steps .* must be >= 1, got 0"):
        FTMHparams(layers=(1,), num_steps=0)
    assert FTMHparams(layers=[1, 2], lr=1).layers == (1, 2)
