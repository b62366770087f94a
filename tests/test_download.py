"""Dataset downloads against a loopback HTTP server (127.0.0.1, never the internet): success,
checksum mismatch, HTTP errors, transfers cut short, and the table of public sources."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kedit.data.download import SOURCES, download, resolve_source
from kedit.data.registry import DATASETS
from kedit.errors import DownloadError
from tests.requirements import SHARED_DATA, require

BODY = json.dumps([{"src": "What is the product made by UniFirst?", "subject": "UniFirst"}] * 50).encode()
BODY_SHA = hashlib.sha256(BODY).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        if self.path == "/files/data.json":
            self._send(BODY, len(BODY))
        elif self.path == "/short.json":
            # announce the whole body, send a third of it, then close the connection
            self._send(BODY[: len(BODY) // 3], len(BODY))
            self.close_connection = True
        elif self.path == "/broken":
            self.send_error(500, "server exploded")
        else:
            self.send_error(404, "no such file")

    def _send(self, payload: bytes, announced: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(announced))
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass


@pytest.fixture
def server(monkeypatch) -> Iterator[str]:
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


def test_download_success_writes_the_exact_bytes(server, tmp_path):
    path = download("my-file", tmp_path / "out", url=f"{server}/files/data.json", sha256=BODY_SHA, progress=False)
    assert path == tmp_path / "out" / "data.json"
    assert path.read_bytes() == BODY
    assert _leftovers(tmp_path / "out") == ["data.json"]  # no temporary left beside it


def test_matching_file_is_kept_without_a_request(server, tmp_path):
    (tmp_path / "data.json").write_bytes(BODY)
    # the URL 404s, so success proves no request was made
    path = download("my-file", tmp_path, url=f"{server}/gone/data.json", sha256=BODY_SHA, progress=False)
    assert path.read_bytes() == BODY


def test_checksum_mismatch_raises_and_keeps_nothing(server, tmp_path):
    wrong = "0" * 64
    with pytest.raises(DownloadError, match=f"sha256 is {BODY_SHA}, expected {wrong}"):
        download("my-file", tmp_path, url=f"{server}/files/data.json", sha256=wrong, progress=False)
    assert _leftovers(tmp_path) == []


def test_known_source_checks_its_recorded_checksum_through_a_mirror(server, tmp_path):
    # the mirror serves other bytes than the recorded zsre file, so its recorded sha256 refuses them
    with pytest.raises(DownloadError, match="expected " + SOURCES["zsre-train-1k"].sha256):
        download("zsre-train-1k", tmp_path, url=f"{server}/files/data.json", progress=False)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(("route", "message"), [("/missing.json", "HTTP 404 no such file"),
                                                ("/broken", "HTTP 500 server exploded")])
def test_http_errors_are_clear(server, tmp_path, route, message):
    with pytest.raises(DownloadError, match=message):
        download("my-file", tmp_path, url=f"{server}{route}", progress=False)
    assert _leftovers(tmp_path) == []


def test_transfer_cut_short_leaves_no_file_under_the_final_name(server, tmp_path):
    with pytest.raises(DownloadError, match=rf"short.json: transfer (ended after {len(BODY) // 3} of {len(BODY)} bytes|failed)"):
        download("my-file", tmp_path, url=f"{server}/short.json", progress=False)
    assert _leftovers(tmp_path) == []


def test_an_existing_good_file_survives_a_failed_download(server, tmp_path):
    (tmp_path / "short.json").write_text("old contents")
    with pytest.raises(DownloadError):
        download("my-file", tmp_path, url=f"{server}/short.json", progress=False)
    assert (tmp_path / "short.json").read_text() == "old contents"
    assert _leftovers(tmp_path) == ["short.json"]


def test_unreachable_host_is_a_download_error(tmp_path, monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    # port 9 (discard) on loopback: nothing listens there in a test environment
    with pytest.raises(DownloadError, match="could not reach|transfer failed"):
        download("my-file", tmp_path, url="http://127.0.0.1:9/x.json", progress=False, timeout=5)


def test_bad_requests_fail_before_any_network():
    with pytest.raises(DownloadError, match="no known download called 'nope'"):
        resolve_source("nope")
    with pytest.raises(DownloadError, match="only http"):
        resolve_source("nope", url="file:///etc/passwd")
    with pytest.raises(DownloadError, match="64 hexadecimal"):
        resolve_source("zsre-train-1k", sha256="abc")


def test_source_table_is_consistent():
    assert set(SOURCES) and all(source.dataset in DATASETS for source in SOURCES.values())
    for source in SOURCES.values():
        assert source.url.startswith("https://"), source
        assert source.sha256 is None or len(source.sha256) == 64, source
    with pytest.raises(TypeError):
        SOURCES["x"] = SOURCES["zsre-train-1k"]  # type: ignore[index]


def test_recorded_checksums_match_the_shared_manifest():
    manifest_path = SHARED_DATA / "MANIFEST.json"
    require(manifest_path.is_file(), f"shared data manifest {manifest_path}")
    manifest = {entry["sha256"]: entry for entry in json.loads(manifest_path.read_text())}
    for source in SOURCES.values():
        if source.sha256 is None:
            continue
        entry = manifest.get(source.sha256)
        assert entry is not None, f"{source.name}: sha256 not in MANIFEST.json"
        # the URL points into the repository and commit the manifest records for that file
        assert f"/{entry['repo']}/{entry['commit']}/" in source.url, source.name


def test_cli_download(server, tmp_path):
    from typer.testing import CliRunner

    from kedit.cli.data import data_app

    result = CliRunner().invoke(data_app, ["download", "my-file", "--out", str(tmp_path),
                                           "--url", f"{server}/files/data.json", "--sha256", BODY_SHA])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data.json").read_bytes() == BODY
    assert BODY_SHA in result.output and "verified" in result.output
    result = CliRunner().invoke(data_app, ["download", "my-file", "--out", str(tmp_path / "x"),
                                           "--url", f"{server}/missing.json"])
    assert result.exit_code == 2 and "HTTP 404" in result.output
