"""No absolute path of a machine in committed results, and the path rule that keeps new ones out.

The rule (kedit/runs/portable.py, docs/ARCHITECTURE.md "Paths in run files and reports"): relative
to the run directory, under the data root, relative to the repository, else ``<outside>/NAME``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from kedit.runs import (
    portable_argument,
    portable_command,
    portable_command_text,
    portable_path,
    repository_root,
)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results"
MACHINE_PREFIXES = ("/tmp/", "/root/", "/home/", "/work/")
DATA_URI = re.compile(r"data:[a-z]+/[a-z0-9.+-]+;base64,[A-Za-z0-9+/=]+")


def _text(path: Path) -> str | None:
    data = path.read_bytes()
    if b"\0" in data:
        return None  # PNG and other binary files
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def machine_paths(root: Path) -> list[str]:
    """``file:line: text`` for each line of a text file under ``root`` naming a machine path (data URIs aside)."""
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        text = _text(path)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            line = DATA_URI.sub("", line)
            for prefix in MACHINE_PREFIXES:
                if prefix in line:
                    start = line.index(prefix)
                    found.append(f"{path.relative_to(root.parent)}:{number}: {line[max(0, start - 30):start + 60]}")
    return found


def test_no_committed_result_holds_a_path_of_the_machine_it_was_made_on():
    found = machine_paths(RESULTS)
    assert not found, ("machine paths in committed results (rewrite them with bench/scrub_paths.py):\n"
                       + "\n".join(found))


def test_the_check_finds_a_machine_path_and_names_file_and_line(tmp_path):
    folder = tmp_path / "results"
    (folder / "run").mkdir(parents=True)
    (folder / "run" / "run.json").write_text('{\n  "path": "/home/me/data.json"\n}\n')
    (folder / "page.html").write_text('<img src="data:image/png;base64,AAAA/tmp/BBBB">\n')  # base64, not a path
    assert machine_paths(folder) == ['results/run/run.json:2:   "path": "/home/me/data.json"']


def test_the_scrub_script_rewrites_known_prefixes_and_leaves_images_alone():
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import scrub_paths
    finally:
        sys.path.remove(str(REPO / "bench"))
    text = ('kedit bench --data cf:/tmp/data/counterfact/e.json --out /tmp/kgpu/runs/cf-rome '
            '<img src="data:image/png;base64,ab/tmp/data/cd"> /work/shared/data/zsre/z.json')
    assert scrub_paths.scrub(text) == ('kedit bench --data cf:../shared/data/counterfact/e.json --out runs/gpu/cf-rome '
                                       '<img src="data:image/png;base64,ab/tmp/data/cd"> ../shared/data/zsre/z.json')
    assert scrub_paths.scrub(scrub_paths.scrub(text)) == scrub_paths.scrub(text)
    assert scrub_paths.leftovers("a\nsee /tmp/elsewhere/x.json") == [(2, "/tmp/elsewhere/x.json")]


# -------------------------------------------------------------------------------------------- the rule


def test_paths_are_written_relative_to_the_run_the_data_root_or_the_repository(tmp_path, monkeypatch):
    monkeypatch.delenv("KEDIT_DATA", raising=False)
    root = repository_root()
    assert portable_path(root / "runs" / "cf-rome") == "runs/cf-rome"
    assert portable_path(root / "runs" / "cf-rome" / "edits" / "00001", run_dir=root / "runs" / "cf-rome") == "edits/00001"
    assert portable_path(root.parent / "shared" / "data" / "zsre" / "z.json") == "../shared/data/zsre/z.json"
    assert portable_path(tmp_path / "elsewhere" / "cases.json") == "<outside>/cases.json"
    monkeypatch.setenv("KEDIT_DATA", str(tmp_path / "data"))
    assert portable_path(tmp_path / "data" / "cf" / "e.json") == "$KEDIT_DATA/cf/e.json"
    # in a command the variable stays expandable
    assert portable_command(["kedit", "bench", "--data", f"cf:{tmp_path / 'data' / 'cf' / 'e.json'}"]) == \
        'kedit bench --data cf:"$KEDIT_DATA"/cf/e.json'


def test_command_arguments_that_are_paths_are_rewritten_and_others_kept(tmp_path, monkeypatch):
    monkeypatch.delenv("KEDIT_DATA", raising=False)
    root = repository_root()
    words = ["kedit", "bench", "--method", "rome", "--data", f"counterfact:{root.parent}/shared/data/cf.json",
             "--out", str(root / "runs" / "x"), f"--hparams={tmp_path}/h.yaml", "--model", "HuggingFaceTB/SmolLM2-135M",
             "--set", "v_lr=0.5"]
    assert portable_command(words, cwd=root) == (
        "kedit bench --method rome --data counterfact:../shared/data/cf.json --out runs/x "
        "'--hparams=<outside>/h.yaml' --model HuggingFaceTB/SmolLM2-135M --set v_lr=0.5")
    assert portable_argument("https://example.org/a") == "https://example.org/a"
    recorded = "kedit report /tmp/runs4/a runs/b --out 'docs/results/x'"
    assert portable_command_text(recorded) == "kedit report '<outside>/a' runs/b --out docs/results/x"


def test_kedit_bench_writes_run_files_without_machine_paths(tiny_folder, tmp_path, monkeypatch):
    from kedit.cli import app
    from kedit.requests import Case, EditRequest

    cases = [Case(request=EditRequest("The Eiffel Tower is located in the city of", "Eiffel Tower", "Rome",
                                      target_true="Paris"), case_id="0")]
    data = tmp_path / "cases.json"
    data.write_text(json.dumps([case.to_dict() for case in cases]))
    out = tmp_path / "run"
    args = ["bench", "--model", str(tiny_folder), "--method", "ft-l", "--set", "num_steps=1", "--n", "1",
            "--data", f"cases:{data}", "--out", str(out), "--no-progress"]
    monkeypatch.setattr(sys, "argv", ["kedit", *args])  # what command_line() records
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    info = json.loads((out / "run.json").read_text())
    assert info["data"]["path"] == "<outside>/cases.json" and info["data"]["name"] == "cases"
    assert "--out '<outside>/run'" in info["command"]
    assert info["model"]["name"] == f"<outside>/{tiny_folder.name}"
    for name in ("run.json", "summary.json", "results.jsonl"):
        text = (out / name).read_text()
        assert not any(prefix in text for prefix in MACHINE_PREFIXES), f"{name}: {text[:400]}"


def test_pitfalls_run_json_names_its_files_by_the_rule(tmp_path):
    from kedit.cli.pitfalls import _data_info

    data, prompts = tmp_path / "reverse_edit.json", tmp_path / "prompts.json"
    data.write_text("[]")
    prompts.write_text("{}")
    info = _data_info(data, prompts, SimpleNamespace(records=[], problems=[]), None)
    assert (info["path"], info["prompts_path"]) == ("<outside>/reverse_edit.json", "<outside>/prompts.json")
    assert len(info["sha256"]) == 64


@pytest.mark.parametrize("name", ["smollm2-135m", "HuggingFaceTB/SmolLM2-135M"])
def test_model_names_that_are_not_paths_are_kept(name):
    assert portable_argument(name) == name
