"""Run directories: one home for their layout, writing, reading, resume and provenance.

Every producer (``kedit bench`` through :func:`kedit.evaluate.runner.run_bench`, ``kedit pitfalls``,
``kedit demo``) writes its folder with these functions and :mod:`kedit.reports` reads it back with
them, so a file name or a crash-safety rule is decided in one place.

* :mod:`kedit.runs.layout` — the file names and run kinds;
* :mod:`kedit.runs.files` — atomic JSON, fsynced JSON-lines appends, atomic rewrites, and the one
  JSON-lines reader (a partial last line is an interrupted write, not a record);
* :mod:`kedit.runs.resume` — refusing a folder that holds another run, the identity check, sessions;
* :mod:`kedit.runs.provenance` — versions, creation time, command line, the model block;
* :mod:`kedit.runs.portable` — the path rule: no absolute path of the machine in a run file.

Nothing here imports torch or transformers when imported (kedit.reports runs without them).
"""

from kedit.runs.files import BadLine, append_lines, read_lines, write_json_atomic, write_lines_atomic
from kedit.runs.layout import (
    BENCH,
    CASES_FILE,
    CURVE_FILE,
    DEMO,
    EDITS_DIR,
    LONGTAIL_PROBE,
    PITFALLS_CONFLICT,
    PITFALLS_ROUND,
    RESULTS_FILE,
    RUN_FILE,
    SUMMARY_FILE,
    edit_dir,
)
from kedit.runs.portable import (
    data_root,
    portable_argument,
    portable_command,
    portable_command_text,
    portable_path,
    repository_root,
)
from kedit.runs.provenance import command_line, model_info, provenance, timestamp, versions
from kedit.runs.resume import (
    ResumeError,
    canonical,
    case_key,
    cases_digest,
    check_resumable,
    start_run,
    stored_edit_dirs,
    with_session,
)

__all__ = [
    "BENCH",
    "CASES_FILE",
    "CURVE_FILE",
    "DEMO",
    "EDITS_DIR",
    "LONGTAIL_PROBE",
    "PITFALLS_CONFLICT",
    "PITFALLS_ROUND",
    "RESULTS_FILE",
    "RUN_FILE",
    "SUMMARY_FILE",
    "BadLine",
    "ResumeError",
    "append_lines",
    "canonical",
    "case_key",
    "cases_digest",
    "check_resumable",
    "command_line",
    "edit_dir",
    "data_root",
    "model_info",
    "portable_argument",
    "portable_command",
    "portable_command_text",
    "portable_path",
    "provenance",
    "read_lines",
    "repository_root",
    "start_run",
    "stored_edit_dirs",
    "timestamp",
    "versions",
    "with_session",
    "write_json_atomic",
    "write_lines_atomic",
]
