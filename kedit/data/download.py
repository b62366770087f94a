"""Fetch the public dataset files kedit reads, checked and written atomically.

:data:`SOURCES` names every file kedit knows where to get: the raw GitHub URL of the repository and
commit it was taken from (the origins recorded in the shared data folder's MANIFEST.json), the
file name to save it under, the loader that reads it and, when known, its sha256. ROME's own
``counterfact.json`` (the one layout the shared folder lacks) comes from the ROME authors' site, with
no recorded checksum.

:func:`download` streams with the standard library (``urllib``: no extra dependency for a few
megabytes), hashing as it writes into a temporary beside the target (:func:`kedit.paths.atomic_path`).
The file appears under its final name only when the transfer is complete (as long as the server
announced) and the checksum matches; an HTTP error, a connection cut short or a checksum mismatch
raises :class:`~kedit.errors.DownloadError` and leaves nothing behind. No partial transfer is kept, so
there is nothing to resume: a failed download is simply run again (the files are at most a few MB).
"""

from __future__ import annotations

import hashlib
import http.client
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from tqdm.auto import tqdm

from kedit.errors import DownloadError
from kedit.paths import atomic_path, sha256_file

CHUNK_BYTES = 1 << 16
TIMEOUT_S = 60.0
USER_AGENT = "kedit-dataset-download"


@dataclass(frozen=True)
class DownloadSource:
    """Where one dataset file lives and how to check it."""

    name: str
    dataset: str  # the kedit.data.registry name that loads it
    url: str
    filename: str
    sha256: str | None
    origin: str  # repository@commit:path (or site) and licence, for the record


def _github(repo: str, commit: str, path: str) -> str:
    return f"https://raw.githubusercontent.com/{repo}/{commit}/{urllib.parse.quote(path)}"


def _sources() -> tuple[DownloadSource, ...]:
    knowledge_spread = ("Jometeorie/KnowledgeSpread", "51d7402617c2e52bde0dc11b76e400c3725a181a")
    easyedit_fork = ("fasdkljfds/EasyEdit", "e7880657d5944e9466646fdf7399dd5792e8e506")
    pitfalls = ("zjunlp/PitfallsKnowledgeEditing", "0cf7acaf27205e99b105991c4c89c16076125393")

    def github(name: str, dataset: str, where: tuple[str, str], path: str, filename: str,
               sha256: str, licence: str) -> DownloadSource:
        repo, commit = where
        return DownloadSource(name, dataset, _github(repo, commit, path), filename, sha256,
                              f"{repo}@{commit}:{path} ({licence})")

    def knowedit(name: str, dataset: str, task: str, file: str, sha256: str) -> DownloadSource:
        return github(name, dataset, easyedit_fork, f"data/KnowEdit/benchmark_{task}_{file}.json", f"{file}.json",
                      sha256, "MIT, KnowEdit via an EasyEdit fork")

    def wise(split: str, part: str, sha256: str) -> DownloadSource:
        return github(f"wise-{split}-{part}", "wise", easyedit_fork, f"data/wise/{split}/{split}-{part}.json",
                      f"{split}-{part}.json", sha256, "MIT, WISE data via an EasyEdit fork")

    def pitfall(name: str, dataset: str, file: str, sha256: str) -> DownloadSource:
        return github(name, dataset, pitfalls, f"data/GPT2-XL/{file}", file, sha256, "MIT")

    return (
        DownloadSource("counterfact", "counterfact", "https://rome.baulab.info/data/dsets/counterfact.json",
                       "counterfact.json", None, "ROME authors' site (MIT); no recorded checksum"),
        github("counterfact-easyedit-edit", "counterfact-easyedit", knowledge_spread,
               "data/counterfact/counterfact-edit.json", "counterfact-edit.json",
               "bfe31a7081932739406e282bb625d74222549c3386c15b1df3dfbc3978c69eec", "EasyEdit/MEND split of CounterFact, MIT"),
        github("counterfact-easyedit-train", "counterfact-easyedit", knowledge_spread,
               "data/counterfact/counterfact-train.json", "counterfact-train.json",
               "f7d443ffb0c5da6cbe816cdac45281ccb3f204b8a840f00d07a4aafa949bcd76", "EasyEdit/MEND split of CounterFact, MIT"),
        github("zsre-train-1k", "zsre", knowledge_spread, "data/zsre/zsre_mend_train-1k.json",
               "zsre_mend_train-1k.json",
               "e62596101d8ed551889c26c0d2a5277f92eaef3b14416d8eaee39b04a244ab60", "MEND/ROME zsRE split"),
        github("zsre-portability", "zsre",
               ("JasonForJoy/Model-Editing-Hurt", "c6ab1472552c6d5b330ada033dd40f1d325416d0"),
               "edited-data/zsre_mend_eval_portability_gpt4.json", "zsre_mend_eval_portability_gpt4.json",
               "0cf155da229b2eccae19fcfe5f7a09523363d357f5f15508d1521f495ad5ecd9", "EasyEdit data, MIT"),
        knowedit("knowedit-zsre-test", "knowedit", "ZsRE", "ZsRE-test-all",
                 "d70ff1f69ddcac101bbe9c6f1d6ee3918bdac96f145d937e90fbbb02fcf85fab"),
        knowedit("knowedit-counterfact-train", "knowedit", "wiki_counterfact", "train_cf",
                 "acdc01922afab1d4122249a2c22ad8c1e0e86506dd7a28eec698f22d175ebf9d"),
        github("knowedit-counterfact-test", "knowedit",
               ("leonz-z/EasyEdit", "57df6d9eb5c1462b925cc0a09227cec83be42089"),
               "dataset/KnowEdit-ms/wiki_counterfact_test_cf-generate-10.json", "test_cf-generate-10.jsonl",
               "ab0dd49dd0efc3ca12beb795b3b4af9e71536aefa19f00edeb90dca9e5bcdac7", "MIT, KnowEdit, JSON lines"),
        knowedit("knowedit-recent-train", "knowedit", "wiki_recent", "recent_train",
                 "5856107412ddeeae2ceea2a15ebd125fd7c86ac8d62b933b095514304a77c73a"),
        knowedit("knowedit-wikibio-test", "knowedit-wikibio", "WikiBio", "wikibio-test-all",
                 "00933f69b47d8281d01f1f4b84f3f266b7482a65a7d74022e660a8a9ca2264a4"),
        knowedit("knowedit-wikibio-train", "knowedit-wikibio", "WikiBio", "wikibio-train-all",
                 "6ee88049c1c6c00d6f81d2d942350b6ec78b45917d2ec8a3eec3eafa89c2e209"),
        knowedit("knowedit-sanitation-test", "knowedit-sanitation", "trivia", "trivia_qa_test",
                 "515f5e08e8ebc1a6274938a67dee34489d17f6177f2726ecb937064f1e9a79f7"),
        knowedit("knowedit-sanitation-train", "knowedit-sanitation", "trivia", "trivia_qa_train",
                 "30ddde2c3410f93cf5a7f34fe6fcb0fd9f1d4fdfde3974c563c76c763ae109d3"),
        github("mquake-hard", "mquake", ("wangywUST/DeepEdit", "c90b29588dec8325a6481054e63bf10baf3cff57"),
               "datasets/MQuAKE-hard.json", "MQuAKE-hard.json",
               "fc78dc7bec4625d3ce6e2923acae7f1920691b0b23e663182bf799f2856f2a11", "derived from MQuAKE, MIT"),
        github("mquake-t-triples", "mquake-t",
               ("dice-group/Benchmarking-KE", "758e1bae912ac7b65779925e7113d108c80bcdd5"),
               "evaluate_rules/all_triples/MQuAKE/new_mquake-t.json", "new_mquake-t.json",
               "08a2e0efec9fd49b0c818ce706a301e1f23026430afb51a6ca1c88a9db82532a", "MIT"),
        wise("hallucination", "edit", "523ce88b5299047bf58ea3ad8b7e9d12635592543df54b58c8eaf16d5e68aaaf"),
        wise("hallucination", "train", "ef280a0ce9aa194c545e7a1c7983df181b8e48dbfb1945ffe40e1903cca0d297"),
        wise("temporal", "edit", "3c27956224d56111762e7b56ca0595dc638cc005faaf322a01c48ecd5283aef8"),
        wise("temporal", "train", "0ba8c40de49bd0d0ffc1da69ac17fcfce6db8c32bf36a7df5c88730b48e1172a"),
        pitfall("conflictedit-reverse", "conflictedit", "reverse_edit.json",
                "1b2b967db5a135947e4c56bd3ff14f942fa4aa18f1532e842d0195dcf40bc78e"),
        pitfall("conflictedit-composite", "conflictedit", "composite_edit.json",
                "cede1cca203ae223ba8fe1b7b784ac5a18fe8da2a48a014e354e61165cdfc42c"),
        pitfall("conflictedit-coverage", "conflictedit", "coverage_edit.json",
                "2122e65f4d5f9fa62dcec59c9010f6aaf10bc297c89ae51cdb0e1c1e8ccab0ac"),
        pitfall("conflictedit-prompts", "conflictedit", "conflict_prompts.json",
                "6072b8fe90107f8949ee79fd09a63e3877983b978a604b1dd534f2dc7c5f55fa"),
        pitfall("roundedit-easy", "roundedit", "easy.json",
                "9e334997a8ee9a1f7948507f5eaad84462d09f2ce9ff64c76c0a12debcd0aa7b"),
        pitfall("roundedit-hard", "roundedit", "hard.json",
                "0919ac18cca9ab5c9ec39ae8d6d080123a5a8b1fac28813e9d30ca9df3a96d59"),
        pitfall("roundedit-prompts", "roundedit", "round_prompts.json",
                "577a7b024c73c06c985fab5838010b88b941105fe8285c21b23a44fdc4286939"),
    )


SOURCES: Mapping[str, DownloadSource] = MappingProxyType({source.name: source for source in _sources()})


def resolve_source(name: str, url: str | None = None, sha256: str | None = None) -> DownloadSource:
    """The source called ``name``, with ``url`` / ``sha256`` overriding its own (a mirror, a pinned copy).

    An unknown name is allowed only with ``url``: the file is then saved under the URL's last
    path component and checked only if ``sha256`` is given.
    """
    known = SOURCES.get(name)
    if known is None and url is None:
        raise DownloadError(f"no known download called {name!r}; known: {', '.join(SOURCES)} "
                            "(or give --url to fetch any file)")
    if url is not None:
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme not in ("http", "https"):
            raise DownloadError(f"only http(s) URLs can be downloaded, got {url!r}")
    if sha256 is not None and (len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256.lower())):
        raise DownloadError(f"sha256 must be 64 hexadecimal digits, got {sha256!r}")
    if known is None:
        filename = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
        if not filename:
            raise DownloadError(f"cannot name the file from URL {url!r}; give a URL that ends in a file name")
        return DownloadSource(name, "auto", url, filename, sha256 and sha256.lower(), url)
    return DownloadSource(known.name, known.dataset, url or known.url, known.filename,
                          (sha256 or known.sha256 or "").lower() or None, known.origin)


def _stream(url: str, target: Path, progress: bool, timeout: float) -> str:
    """Write the body of ``url`` to ``target``; return its sha256. Short or failed transfers raise."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    digest = hashlib.sha256()
    received = 0
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            announced = response.headers.get("Content-Length")
            expected = int(announced) if announced and announced.isdigit() else None
            with open(target, "wb") as handle, tqdm(total=expected, unit="B", unit_scale=True, leave=False,
                                                    desc=target.name, disable=not progress) as bar:
                while block := response.read(CHUNK_BYTES):
                    handle.write(block)
                    digest.update(block)
                    received += len(block)
                    bar.update(len(block))
    except urllib.error.HTTPError as error:
        raise DownloadError(f"{url}: HTTP {error.code} {error.reason}") from error
    except urllib.error.URLError as error:
        raise DownloadError(f"could not reach {url}: {error.reason}") from error
    except (http.client.HTTPException, OSError) as error:
        # IncompleteRead, a reset connection, a timeout: the transfer stopped part way.
        raise DownloadError(f"{url}: transfer failed after {received} bytes: {error!r}") from error
    if expected is not None and received != expected:
        raise DownloadError(f"{url}: transfer ended after {received} of {expected} bytes")
    return digest.hexdigest()


def download(
    name: str,
    out_dir: str | Path,
    url: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
    *,
    timeout: float = TIMEOUT_S,
) -> Path:
    """Fetch the file ``name`` (see :data:`SOURCES`) into ``out_dir``; return its path.

    A file already there whose sha256 matches the expected one is kept without a network call.
    Raises :class:`~kedit.errors.DownloadError` on an HTTP error, a short transfer or a checksum
    mismatch; the final path then holds what it held before (usually nothing).
    """
    source = resolve_source(name, url, sha256)
    final = Path(out_dir) / source.filename
    if source.sha256 is not None and final.is_file() and sha256_file(final) == source.sha256:
        return final
    with atomic_path(final) as tmp:
        actual = _stream(source.url, tmp, progress, timeout)
        if source.sha256 is not None and actual != source.sha256:
            raise DownloadError(f"{source.url}: sha256 is {actual}, expected {source.sha256}; "
                                "the file was not kept (a changed upstream file or a bad mirror)")
    return final
