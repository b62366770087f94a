"""Trained editors on disk: what a ``Method.train`` run leaves behind, and how it is found again.

An artifact is a folder::

    artifact.json          manifest: method, editor version, base fingerprint, training hparams and
                           their digest, training-data digest, code versions, training summary, the
                           sha256 of every other file
    editor.safetensors     the trained tensors (the method decides their names)
    training-keys.json     the digests of every training case's id and prompts (the overlap check)

It is found in the store ``$KEDIT_HOME/artifacts/<method>/<key>/`` by its :class:`ArtifactKey`:
the method, its ``editor_version`` (bumped by the method when its tensors change meaning), the base
model's fingerprint, the digest of the hyperparameters that shape training, and the digest of the
training data. Applying an artifact to another base model is refused (:func:`check_artifact_base`).

The overlap check (:func:`training_overlap`) compares an evaluation set against the training keys:
a prompt of the evaluation data that the editor was trained on means the numbers would measure
memorisation, not editing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kedit.errors import KeditError
from kedit.paths import atomic_path, cache_dir, exclusive_lock, lock_path, sha256_file, sha256_text
from kedit.requests import Case

MANIFEST_FILE = "artifact.json"
TENSORS_FILE = "editor.safetensors"
KEYS_FILE = "training-keys.json"
ARTIFACT_FORMAT = 1
STORE = "artifacts"
DIGEST_CHARS = 16  # of each training key: collisions among 10^5 prompts are ~1e-10 likely


def _short(text: str) -> str:
    return sha256_text(text)[:DIGEST_CHARS]


def normalise_prompt(text: str) -> str:
    """Prompts compared case- and whitespace-insensitively (rephrasing the spacing is not a new prompt)."""
    return " ".join(text.lower().split())


def case_prompts(case: Case) -> list[str]:
    """The prompts of a case a trained editor reads in training: the edit prompt and its rephrases."""
    return [case.request.text, *case.rephrases]


@dataclass(frozen=True)
class TrainingKeys:
    """Digests of the training data, enough to detect overlap without storing the data."""

    case_ids: frozenset[str]  # digests of "dataset-name:case-id"
    prompts: frozenset[str]  # digests of normalised edit prompts and rephrases

    @classmethod
    def of(cls, cases: Iterable[Case], dataset: str) -> TrainingKeys:
        ids, prompts = set(), set()
        for case in cases:
            if case.case_id is not None:
                ids.add(_short(f"{dataset}:{case.case_id}"))
            prompts.update(_short(normalise_prompt(prompt)) for prompt in case_prompts(case))
        return cls(frozenset(ids), frozenset(prompts))

    def digest(self) -> str:
        """One digest of the whole training set: the key of the data in :class:`ArtifactKey`."""
        return sha256_text("\n".join(sorted(self.case_ids)) + "\n--\n" + "\n".join(sorted(self.prompts)))

    def to_json(self) -> dict[str, list[str]]:
        return {"case_ids": sorted(self.case_ids), "prompts": sorted(self.prompts)}

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> TrainingKeys:
        return cls(frozenset(payload.get("case_ids", ())), frozenset(payload.get("prompts", ())))


@dataclass(frozen=True)
class Overlap:
    """Evaluation cases whose id or prompts the editor saw in training."""

    by_prompt: tuple[str, ...]  # case ids (or indices) of evaluation cases sharing a prompt with training
    by_id: tuple[str, ...]  # case ids equal to a training case id of the same dataset

    @property
    def empty(self) -> bool:
        return not self.by_prompt and not self.by_id


def training_overlap(keys: TrainingKeys, cases: Sequence[Case], dataset: str) -> Overlap:
    by_prompt, by_id = [], []
    for index, case in enumerate(cases):
        label = str(case.case_id) if case.case_id is not None else f"#{index}"
        if any(_short(normalise_prompt(prompt)) in keys.prompts for prompt in case_prompts(case)):
            by_prompt.append(label)
        if case.case_id is not None and _short(f"{dataset}:{case.case_id}") in keys.case_ids:
            by_id.append(label)
    return Overlap(tuple(by_prompt), tuple(by_id))


def hparams_digest(training_hparams: Mapping[str, Any]) -> str:
    return sha256_text(json.dumps(training_hparams, sort_keys=True, default=str))


@dataclass(frozen=True)
class ArtifactKey:
    method: str
    editor_version: int
    base_fingerprint: str
    hparams_digest: str
    data_digest: str

    def folder_name(self) -> str:
        text = "|".join(str(value) for value in dataclasses.astuple(self))
        return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class ArtifactManifest:
    """The contents of ``artifact.json``."""

    method: str
    editor_version: int
    base_fingerprint: str
    base_source: str
    training_hparams: Mapping[str, Any]
    data: Mapping[str, Any]  # name, path, sha256 of the file, digest of the keys, case count
    versions: Mapping[str, str]
    training: Mapping[str, Any] = field(default_factory=dict)  # steps, best step, best validation, seconds
    files: Mapping[str, str] = field(default_factory=dict)  # file name -> sha256
    format: int = ARTIFACT_FORMAT

    @property
    def key(self) -> ArtifactKey:
        return ArtifactKey(self.method, self.editor_version, self.base_fingerprint,
                           hparams_digest(self.training_hparams), str(self.data["keys_digest"]))


@dataclass(frozen=True)
class Artifact:
    """A trained editor: its manifest, the folder it lives in and its tensors (loaded on demand)."""

    manifest: ArtifactManifest
    folder: Path

    def tensors(self, device: str | Any = "cpu") -> dict[str, Any]:
        from safetensors.torch import load_file

        return load_file(str(self.folder / TENSORS_FILE), device=str(device))

    def training_keys(self) -> TrainingKeys:
        return TrainingKeys.from_json(json.loads((self.folder / KEYS_FILE).read_text()))


def save_artifact(folder: Path, manifest: ArtifactManifest, tensors: Mapping[str, Any], keys: TrainingKeys) -> Artifact:
    """Write an artifact folder atomically (a half-written folder never appears under ``folder``)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    with atomic_path(folder) as tmp:
        tmp.mkdir(parents=True)
        save_file({name: tensor.detach().contiguous().cpu() for name, tensor in tensors.items()},
                  str(tmp / TENSORS_FILE))
        (tmp / KEYS_FILE).write_text(json.dumps(keys.to_json()))
        hashes = {name: sha256_file(tmp / name) for name in (TENSORS_FILE, KEYS_FILE)}
        payload = dataclasses.asdict(dataclasses.replace(manifest, files=hashes))
        (tmp / MANIFEST_FILE).write_text(json.dumps(payload, indent=2, default=str))
        if folder.exists():
            shutil.rmtree(folder)
    return Artifact(dataclasses.replace(manifest, files=hashes), folder)


def load_artifact(folder: str | Path, method: str | None = None, *, verify: bool = True) -> Artifact:
    """Read an artifact folder, checking every file against its recorded sha256 (``verify``: hashing a
    large editor takes a while, so a store lookup compares the manifests first and verifies the match)."""
    folder = Path(folder).expanduser()
    if not (folder / MANIFEST_FILE).is_file() and (folder / "artifact" / MANIFEST_FILE).is_file():
        folder = folder / "artifact"  # the --out folder of `kedit train` holds the artifact in artifact/
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file():
        raise KeditError(f"{folder} is not a trained-editor artifact (no {MANIFEST_FILE}); "
                         "point artifact= at the --out folder of `kedit train`")
    try:
        payload = json.loads(manifest_path.read_text())
        manifest = ArtifactManifest(**payload)
    except (json.JSONDecodeError, TypeError) as error:
        raise KeditError(f"{manifest_path} is not a readable artifact manifest ({error}); retrain the editor") from error
    if manifest.format != ARTIFACT_FORMAT:
        raise KeditError(f"{manifest_path} has artifact format {manifest.format}; this kedit reads "
                         f"format {ARTIFACT_FORMAT}: retrain the editor")
    if method is not None and manifest.method != method:
        raise KeditError(f"{folder} holds a trained {manifest.method!r} editor, not {method!r}")
    for name, expected in manifest.files.items() if verify else ():
        path = folder / name
        if not path.is_file() or sha256_file(path) != expected:
            raise KeditError(f"{path} is missing or does not match its sha256 in {MANIFEST_FILE}: the artifact is "
                             "corrupted; retrain or copy it again")
    return Artifact(manifest, folder)


def check_artifact_base(artifact: Artifact, fingerprint: str, source: str) -> None:
    """Refuse an editor trained on another base model: its statistics and weights mean nothing there."""
    manifest = artifact.manifest
    if manifest.base_fingerprint != fingerprint:
        raise KeditError(
            f"the {manifest.method} editor in {artifact.folder} was trained on {manifest.base_source} "
            f"(weights {manifest.base_fingerprint[:12]}), not on this model {source} (weights {fingerprint[:12]}); "
            f"train one for this model with `kedit train {manifest.method} --model {source} ...`"
        )


def check_artifact_hparams(artifact: Artifact, training_hparams: Mapping[str, Any]) -> None:
    """Refuse an editor trained with other shape-deciding hyperparameters than the ones asked for."""
    stored = dict(artifact.manifest.training_hparams)
    wanted = json.loads(json.dumps(dict(training_hparams), default=str))
    differing = sorted(key for key in set(stored) | set(wanted) if stored.get(key) != wanted.get(key))
    if differing:
        shown = ", ".join(f"{key}: trained {stored.get(key)!r}, asked {wanted.get(key)!r}" for key in differing[:4])
        raise KeditError(f"the editor in {artifact.folder} was trained with other hyperparameters ({shown}); "
                         "drop those --set values or train an editor with them")


def store_root(method: str) -> Path:
    return cache_dir(STORE) / method


def publish(artifact: Artifact) -> Path:
    """Copy ``artifact`` into the store under its key (hard links where the file system allows)."""
    target = store_root(artifact.manifest.method) / artifact.manifest.key.folder_name()
    if target.resolve() == artifact.folder.resolve():
        return target
    # Two trainers publishing the same key at once replace the folder one after the other (a
    # folder's swap is two renames); an artifact already there, byte for byte, is left as it is.
    with exclusive_lock(lock_path(target)):
        if _same_files(target, artifact):
            return target
        _copy_into_store(artifact, target)
    return target


def _same_files(target: Path, artifact: Artifact) -> bool:
    """``target`` holds ``artifact``'s manifest byte for byte, and files with the hashes it records."""
    manifest = target / MANIFEST_FILE
    if not manifest.is_file() or sha256_file(manifest) != sha256_file(artifact.folder / MANIFEST_FILE):
        return False
    try:
        load_artifact(target)  # every file against its recorded sha256
    except KeditError:
        return False
    return True


def _copy_into_store(artifact: Artifact, target: Path) -> None:
    with atomic_path(target) as tmp:
        tmp.mkdir(parents=True)
        for name in (MANIFEST_FILE, *artifact.manifest.files):
            try:
                os.link(artifact.folder / name, tmp / name)
            except OSError:
                shutil.copy2(artifact.folder / name, tmp / name)
        if target.exists():
            shutil.rmtree(target)


def find_artifacts(method: str, editor_version: int, fingerprint: str,
                   training_hparams: Mapping[str, Any]) -> list[Artifact]:
    """Stored artifacts of ``method`` for this base model and these training hyperparameters, newest first."""
    root = store_root(method)
    wanted = hparams_digest(json.loads(json.dumps(dict(training_hparams), default=str)))
    found = []
    for folder in sorted(root.iterdir()) if root.is_dir() else ():
        try:
            key = load_artifact(folder, method, verify=False).manifest.key
            if (key.editor_version, key.base_fingerprint, key.hparams_digest) == (editor_version, fingerprint, wanted):
                found.append(load_artifact(folder, method))
        except KeditError:
            continue  # a corrupted or foreign folder is not a candidate; it is reported when named explicitly
    return sorted(found, key=lambda artifact: (artifact.folder / MANIFEST_FILE).stat().st_mtime, reverse=True)


def with_artifact_hparams(method: str, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """``overrides`` on top of the training hyperparameters of the artifact they name (``artifact=DIR``).

    Whoever edits with a given editor should not have to repeat every value it was trained with;
    a value given explicitly that differs from the trained one is still refused by
    :func:`check_artifact_hparams` when the artifact is resolved.
    """
    overrides = dict(overrides or {})
    explicit = overrides.get("artifact")
    if not explicit:
        return overrides
    trained = load_artifact(explicit, method, verify=False).manifest.training_hparams
    return dict(trained) | overrides


def resolve_artifact(method: str, editor_version: int, fingerprint: str, source: str,
                     training_hparams: Mapping[str, Any], explicit: str | None) -> Artifact:
    """The artifact to edit with: the folder ``explicit`` names (checked against the model and the
    hyperparameters), else the newest one in the store with the same keys; a KeditError saying how to
    train one when there is none."""
    if explicit:
        artifact = load_artifact(explicit, method)
        check_artifact_base(artifact, fingerprint, source)
        if artifact.manifest.editor_version != editor_version:
            raise KeditError(f"{explicit} holds a {method} editor of version {artifact.manifest.editor_version}; "
                             f"this kedit's {method} is version {editor_version}: retrain it")
        check_artifact_hparams(artifact, training_hparams)
        return artifact
    found = find_artifacts(method, editor_version, fingerprint, training_hparams)
    if not found:
        raise KeditError(
            f"no trained {method} editor for this model ({source}, weights {fingerprint[:12]}) with these "
            f"hyperparameters in {store_root(method)}; train one with `kedit train {method} --model {source} "
            f"--data FORMAT:FILE --out DIR` or pass --set artifact=DIR"
        )
    return found[0]
