"""The path rule: what a run file or a report may say about where something lies.

Run records and reports are committed and read on other machines, so they never hold an absolute
path of the machine that wrote them. A path is written

1. relative to the run directory, when it lies inside it (``edits/00003``);
2. under the data root, when it lies there: ``$KEDIT_DATA/<relative>`` when ``$KEDIT_DATA`` is
   set, else relative to the repository (the default data root is ``../shared/data`` beside the
   checkout, so ``../shared/data/counterfact/easyedit_counterfact-edit.json``);
3. relative to the repository root, when it lies inside the repository (``runs/cf-rome``);
4. otherwise as ``<outside>/<file name>``: the file is then identified by what the record says
   beside it (a dataset by its registered name and sha256), not by where it was.

The repository root is the checkout the running kedit was imported from (the folder above the
package holding ``pyproject.toml``), else the current working directory. A command line is
recorded with the same rule applied to each argument that is a path (absolute, ``~``-relative,
``NAME:PATH`` as in ``--data``, ``--option=PATH``), so that it can be run from the repository.

Pure functions of paths and the environment; nothing here touches the files themselves.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from pathlib import Path

DATA_ROOT_VARIABLE = "KEDIT_DATA"
OUTSIDE = "<outside>"


def repository_root() -> Path:
    """The checkout kedit runs from (holding ``pyproject.toml`` above the package), else the working directory."""
    package = Path(__file__).resolve().parents[1]
    checkout = package.parent
    return checkout if (checkout / "pyproject.toml").is_file() else Path.cwd().resolve()


def data_root() -> Path:
    """``$KEDIT_DATA``, else ``shared/data`` beside the repository (this project's data folder)."""
    configured = os.environ.get(DATA_ROOT_VARIABLE)
    if configured:
        return Path(configured).expanduser().resolve()
    return repository_root().parent / "shared" / "data"


def _relative(path: Path, root: Path) -> Path | None:
    try:
        return path.relative_to(root)
    except ValueError:
        return None


def _from_repository(path: Path, repository: Path) -> str | None:
    """``path`` relative to the repository, allowing one ``..`` (a folder beside the checkout)."""
    inside = _relative(path, repository)
    if inside is not None:
        return inside.as_posix() or "."
    beside = _relative(path, repository.parent)
    return None if beside is None else f"../{beside.as_posix()}"


def portable_path(path: str | Path, run_dir: str | Path | None = None) -> str:
    """``path`` written by the rule above (never absolute); ``run_dir`` is the run directory, if any."""
    absolute = Path(os.path.abspath(Path(path).expanduser()))
    if run_dir is not None:
        inside = _relative(absolute, Path(os.path.abspath(Path(run_dir).expanduser())))
        if inside is not None:
            return inside.as_posix() or "."
    root = data_root()
    under_data = _relative(absolute, root)
    repository = repository_root()
    if under_data is not None:
        if os.environ.get(DATA_ROOT_VARIABLE):
            return f"${DATA_ROOT_VARIABLE}/{under_data.as_posix()}"
        written = _from_repository(absolute, repository)
        if written is not None:
            return written
    inside_repository = _relative(absolute, repository)
    if inside_repository is not None:
        return inside_repository.as_posix() or "."
    return f"{OUTSIDE}/{absolute.name}"


def _is_absolute(text: str) -> bool:
    return text.startswith(("/", "~"))


def portable_argument(argument: str, cwd: str | Path | None = None) -> str:
    """One command-line argument with the paths in it written by the rule.

    Absolute (or ``~``) paths are always rewritten; a relative one only when the command ran
    outside the repository root and the path exists there, so ``runs/x`` typed at the root stays.
    ``NAME:PATH`` (``--data counterfact:/data/cf.json``) and ``--option=PATH`` keep their prefix.
    """
    for separator in ("=", ":"):
        prefix, found, rest = argument.partition(separator)
        if found and prefix and _is_absolute(rest) and not rest.startswith("//") and not _is_absolute(prefix):
            return f"{prefix}{separator}{portable_argument(rest, cwd)}"
    if _is_absolute(argument):
        return portable_path(argument)
    here = Path(cwd if cwd is not None else os.getcwd()).resolve()
    if argument and not argument.startswith("-") and here != repository_root() and (here / argument).exists():
        return portable_path(here / argument)
    return argument


def _quote(word: str) -> str:
    """``shlex.quote``, except that ``$KEDIT_DATA`` stays expandable (in double quotes)."""
    variable = f"${DATA_ROOT_VARIABLE}"
    if variable not in word:
        return shlex.quote(word)
    return f'"{variable}"'.join(shlex.quote(part) if part else "" for part in word.split(variable))


def portable_command(arguments: Sequence[str], cwd: str | Path | None = None) -> str:
    """A command line (its words) quoted for a shell, each path argument written by the rule."""
    return " ".join(_quote(portable_argument(argument, cwd)) for argument in arguments)


def portable_command_text(command: str) -> str:
    """A recorded command line (one string) with its path arguments rewritten; unparsable text is kept."""
    try:
        words = shlex.split(command)
    except ValueError:
        return command
    return portable_command(words, cwd=repository_root())
