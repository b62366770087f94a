"""What every run file records about where its numbers came from: versions, time, command, model.

Nothing here imports torch or transformers at module import time (kedit.reports reads run files
on machines without them); :func:`versions` imports them when it is called, by a producer that has
them loaded anyway.
"""

from __future__ import annotations

import datetime
import platform
import sys
from typing import Any

from kedit.runs.portable import portable_argument, portable_command


def versions() -> dict[str, str]:
    """The versions that decide the numbers: kedit, torch, transformers and Python."""
    import torch
    import transformers

    from kedit import __version__

    return {"kedit": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}


def timestamp() -> str:
    """Now, in UTC, to the second (ISO 8601): the ``created`` / ``started`` of run files."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def command_line() -> str:
    """The ``kedit`` command line being run, quoted so that it can be pasted back into a shell, with
    its path arguments written by the path rule (:mod:`kedit.runs.portable`): runnable from the repository."""
    return portable_command(["kedit", *sys.argv[1:]])


def provenance(command: str | None) -> dict[str, Any]:
    """The ``command``, ``versions`` and ``created`` entries of run.json and summary.json."""
    return {"command": command, "versions": versions(), "created": timestamp()}


def model_info(lm: Any, name: str) -> dict[str, Any]:
    """The model block of run.json / summary.json: the name it was loaded by and what identifies its weights.

    A local folder's name is written by the path rule (the fingerprint identifies the weights).
    ``lm`` is a :class:`kedit.models.loading.LoadedModel`; only its attributes are read, so this
    module needs no torch.
    """
    return {"name": portable_argument(str(name)), "fingerprint": lm.fingerprint, "device": str(lm.device),
            "dtype": str(lm.dtype).removeprefix("torch."), "start_token": lm.start_token}
