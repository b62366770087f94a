"""Convert a GGUF checkpoint once into a safetensors HF directory under ``$KEDIT_HOME/models``.

Reading a GGUF file means de-quantising every tensor (~35 s for SmolLM2-135M on two cores,
conversion included); loading the converted safetensors, hashes checked, takes ~1.5 s. The cache entry is keyed by the sha256 of the GGUF
bytes, written atomically (built in a temporary folder, renamed into place) and carries a manifest
with the size and sha256 of each file, so a partial or corrupted entry is detected and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch

from kedit.errors import CacheError, ModelLoadError
from kedit.paths import atomic_path, cache_dir, fill_once, lock_path, sha256_file

MANIFEST_NAME = "kedit-cache.json"
log = logging.getLogger(__name__)


def gguf_digest(parts: Sequence[Path]) -> str:
    """sha256 of the GGUF bytes, whether in one file or in ordered parts (not assembled on disk)."""
    digest = hashlib.sha256()
    for part in parts:
        with open(part, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def verify_converted(directory: Path) -> None:
    """Raise :class:`CacheError` unless every file listed in the manifest is present and intact."""
    manifest_path = directory / MANIFEST_NAME
    if not manifest_path.is_file():
        raise CacheError(f"{directory} has no {MANIFEST_NAME}: the conversion did not finish")
    try:
        files = json.loads(manifest_path.read_text())["files"]
    except (json.JSONDecodeError, KeyError) as error:
        raise CacheError(f"{manifest_path} is unreadable: {error}") from error
    for name, expected in files.items():
        path = directory / name
        if not path.is_file() or path.stat().st_size != expected["bytes"]:
            raise CacheError(f"{path} is missing or truncated")
        if sha256_file(path) != expected["sha256"]:
            raise CacheError(f"{path} does not match its recorded sha256 (corrupted)")


def _clear_gguf_quantizer(model: torch.nn.Module) -> None:
    # transformers marks GGUF-loaded models as "quantized" although their weights are already
    # de-quantised float tensors; save_pretrained refuses such models until the marks are gone.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model, "quantization_method"):
        model.quantization_method = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def converted_dir(parts: Sequence[Path], gguf_name: str) -> Path:
    """Return the safetensors directory for a GGUF file (or its parts), converting it if needed."""
    parts = [Path(part) for part in parts]
    for part in parts:
        if not part.is_file():
            raise ModelLoadError(f"GGUF file {part} does not exist")
    digest = gguf_digest(parts)
    stem = Path(gguf_name).stem
    target = cache_dir("models") / f"{stem}-{digest[:16]}"
    # Processes loading the model for the first time at once (a sweep's workers on a fresh machine)
    # convert it once: the others wait for the lock and then find it verified.
    return fill_once(lock_path(target), lambda: _verified(target), lambda: _converted(parts, gguf_name, digest, target))


def _verified(target: Path) -> Path | None:
    if not target.exists():
        return None
    try:
        verify_converted(target)
        return target
    except CacheError as problem:
        log.warning("rebuilding the converted model cache: %s", problem)
        return None


def _converted(parts: Sequence[Path], gguf_name: str, digest: str, target: Path) -> Path:
    _convert(parts, gguf_name, digest, target)
    verify_converted(target)
    return target


def _convert(parts: Sequence[Path], gguf_name: str, digest: str, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with atomic_path(target) as building:
        building.mkdir(parents=True)
        if len(parts) == 1:
            source_dir, source_name = parts[0].parent, parts[0].name
        else:
            # transformers reads a single GGUF file: assemble the parts inside the temporary folder.
            source_dir, source_name = building / "_gguf", gguf_name
            source_dir.mkdir()
            with open(source_dir / source_name, "wb") as assembled:
                for part in parts:
                    with open(part, "rb") as handle:
                        shutil.copyfileobj(handle, assembled, 1 << 22)
        log.info("converting %s to safetensors (once)", source_name)
        tokenizer = AutoTokenizer.from_pretrained(source_dir, gguf_file=source_name)
        model = AutoModelForCausalLM.from_pretrained(source_dir, gguf_file=source_name, dtype=torch.float32)
        _clear_gguf_quantizer(model)
        out = building / "model"
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        if source_dir != parts[0].parent:
            shutil.rmtree(source_dir)
        for item in out.iterdir():
            item.rename(building / item.name)
        out.rmdir()
        files = {
            item.name: {"bytes": item.stat().st_size, "sha256": sha256_file(item)}
            for item in sorted(building.iterdir())
            if item.is_file()
        }
        (building / MANIFEST_NAME).write_text(
            json.dumps({"source": gguf_name, "source_sha256": digest, "files": files}, indent=2)
        )
