"""The CUDA path: every weight-editing method computes on a model held on the GPU the edit it computes
on the CPU (same tiny model, same statistics corpus), the update keeps its mathematics there (ROME's
edited key maps to its value), reverts are bit for bit, and the runner's records match.

Skipped without a CUDA device (CI has none); run on a GPU machine with ``pytest tests/test_cuda.py``.
"""

from __future__ import annotations

import shutil

import pytest
import torch

import kedit
from kedit.evaluate.runner import run_bench
from kedit.methods.locate import context_templates, optimize_target_value, request_keys
from kedit.methods.rome import ROMEHparams, rank_one_update
from kedit.models import prepare_model
from kedit.requests import Case, EditRequest, LocalityProbe
from kedit.stats import second_moments
from tests.tiny_models import build_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

REQUESTS = [
    EditRequest("The mother tongue of {} is", "Danielle Darrieux", "English", target_true="French"),
    EditRequest("{} plays the sport of", "Michael Jordan", "football", target_true="basketball"),
]
SPREAD = {"layers": (1, 2), "v_num_grad_steps": 5, "context_template_length_params": ((4, 2),),
          "mom2_tokens": 2000, "mom2_update_weight": 50.0, "z_cache": False}
OVERRIDES = {
    "rome": {"layer": 1, "v_num_grad_steps": 5, "context_template_length_params": ((4, 2),), "mom2_tokens": 2000},
    "memit": SPREAD,
    "alphaedit": SPREAD,
    "mle": SPREAD,
    "ft-l": {"layers": (1,), "num_steps": 5, "norm_constraint": 1e-3},
    "ft-m": {"layers": (1,), "num_steps": 5},
}


def _pair(tokenizer, architecture: str = "llama"):
    """The same tiny model twice: on the CPU and on the GPU."""
    cpu = prepare_model(build_model(architecture, len(tokenizer), seed=0), tokenizer, source="tiny")
    gpu = prepare_model(build_model(architecture, len(tokenizer), seed=0).to("cuda"), tokenizer, source="tiny")
    assert gpu.device.type == "cuda" and gpu.fingerprint == cpu.fingerprint
    return cpu, gpu


def _relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double().cpu() - b.double().cpu()).norm() / b.double().cpu().norm().clamp_min(1e-12))


def _threshold_between_eigenvalues(lm, corpus_file) -> float:
    """Halfway across the widest gap near the middle of the layers' eigenvalues: about half of d_k is
    null space (an absolute 2e-2 keeps all or nothing on a tiny model) and GPU rounding of the
    eigenvalues cannot move one across it."""
    moments = second_moments(lm, [1, 2], str(corpus_file), n_tokens=2000, progress=False)
    values = torch.cat([torch.linalg.eigvalsh(moments[layer].double()) for layer in (1, 2)]).sort().values
    middle = values[len(values) // 4 : 3 * len(values) // 4]
    gaps = middle[1:] - middle[:-1]
    widest = int(gaps.argmax())
    return float((middle[widest] + middle[widest + 1]) / 2)


def _share_templates(cpu_home, gpu_home) -> None:
    """Statistics are computed again on the GPU; the context templates are not: they are sampled from
    the model, and a seeded sampler draws other tokens on CUDA than on the CPU (seen on an H200: other
    templates, other keys, a 115 % different delta). Sharing the CPU's cached templates is also how
    GPU runs reproduce CPU numbers (bench/sweeps/gpu_campaign.yaml with kedit sweep run)."""
    if (cpu_home / "templates").is_dir():
        shutil.copytree(cpu_home / "templates", gpu_home / "templates")


@pytest.mark.parametrize("method", sorted(OVERRIDES))
def test_edit_on_the_gpu_equals_the_edit_on_the_cpu(tokenizer, corpus_file, tmp_path, monkeypatch, method):
    cpu, gpu = _pair(tokenizer)
    overrides = dict(OVERRIDES[method])
    if method not in ("ft-l", "ft-m"):
        overrides["mom2_corpus"] = str(corpus_file)
    requests = REQUESTS if method != "rome" else REQUESTS[:1]
    monkeypatch.setenv("KEDIT_HOME", str(tmp_path / "cpu"))
    if method == "alphaedit":
        overrides["nullspace_threshold"] = _threshold_between_eigenvalues(cpu, corpus_file)
    on_cpu = kedit.edit(cpu, method, requests, apply=False, **overrides)
    _share_templates(tmp_path / "cpu", tmp_path / "gpu")
    monkeypatch.setenv("KEDIT_HOME", str(tmp_path / "gpu"))
    before = {name: tensor.clone() for name, tensor in gpu.model.state_dict().items()}
    on_gpu = kedit.edit(gpu, method, requests, apply=True, **overrides)
    assert sorted(on_gpu.deltas) == sorted(on_cpu.deltas)
    for name, delta in on_gpu.deltas.items():
        assert float(delta.norm()) > 0
        assert _relative_difference(delta, on_cpu.deltas[name]) < 1e-3, name
    on_gpu.revert(gpu)
    for name, tensor in gpu.model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_rome_on_the_gpu_maps_the_edited_key_to_its_value(tokenizer, corpus_file, tmp_path, monkeypatch):
    """After the update, the edited module maps k* (mean key over the templates) to v* = v_init + δ."""
    monkeypatch.setenv("KEDIT_HOME", str(tmp_path))
    _, lm = _pair(tokenizer)
    request, layer = REQUESTS[0], 1
    hparams = ROMEHparams(layer=layer, v_num_grad_steps=5, context_template_length_params=((4, 2),),
                          mom2_corpus=str(corpus_file), mom2_tokens=2000)
    templates = context_templates(lm, hparams.context_template_length_params)
    moment = second_moments(lm, [layer], str(corpus_file), n_tokens=2000, progress=False)[layer]
    key_star = request_keys(lm, request, layer, templates, "subject_last").mean(dim=0)
    assert key_star.device.type == "cuda"
    target = optimize_target_value(lm, request, lm.anatomy.mlp_out_paths[layer], layer, templates,
                                   hparams.value_settings())
    module = lm.module(lm.anatomy.mlp_out_paths[layer])

    def output() -> torch.Tensor:
        with torch.no_grad():
            return module(key_star[None].to(lm.dtype))[0].double()

    assert _relative_difference(output(), target.value) > 1e-2  # not already true
    update = rank_one_update(lm, request, hparams, templates, moment)
    with torch.no_grad():
        lm.parameter(lm.anatomy.mlp_out_weight(layer)).add_(lm.anatomy.as_update(update.delta_weight.to(lm.device)))
    assert _relative_difference(output(), target.v_init + target.delta) < 1e-4


def test_scores_and_bench_records_on_the_gpu_equal_the_cpu(tokenizer, corpus_file, tmp_path, monkeypatch):
    cpu, gpu = _pair(tokenizer)
    pairs = [("The mother tongue of Danielle Darrieux is", " French"), ("Michael Jordan plays", " basketball game")]
    for a, b in zip(kedit.score(cpu, pairs), kedit.score(gpu, pairs), strict=True):
        assert a.log_probs == pytest.approx(b.log_probs, rel=1e-4, abs=1e-4) and a.predicted == b.predicted
    cases = [Case(request=request, rephrases=(request.text,),
                  locality=(LocalityProbe("Berlin is the capital of", " Germany"),), case_id=str(index))
             for index, request in enumerate(REQUESTS)]
    summaries = {}
    for label, lm in (("cpu", cpu), ("gpu", gpu)):
        if label == "gpu":
            _share_templates(tmp_path / "home-cpu", tmp_path / "home-gpu")
        monkeypatch.setenv("KEDIT_HOME", str(tmp_path / f"home-{label}"))
        summaries[label] = run_bench(lm, "memit", cases, out_dir=tmp_path / label, progress=False,
                                     overrides=OVERRIDES["memit"] | {"mom2_corpus": str(corpus_file)})
    compared = 0
    for protocol in ("token", "probability"):
        for state in ("pre", "post"):
            for key, value in summaries["cpu"][protocol][state].items():
                assert summaries["gpu"][protocol][state][key] == pytest.approx(value, abs=1e-3), (protocol, state, key)
                compared += 1
    assert compared >= 10
