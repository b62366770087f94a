"""Resources some tests need: the shared data folder and the bundled model package.

Locally a missing resource skips the test; under CI (CI=true) it fails loudly, so a CI run can
never pass by silently skipping what it was meant to check.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def on_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require(condition: bool, what: str) -> None:
    if condition:
        return
    if on_ci():
        pytest.fail(f"{what} is missing; CI must have it", pytrace=False)
    pytest.skip(f"{what} is missing")


def shared_file(relative: str) -> Path:
    path = SHARED_DATA / relative
    require(path.is_file(), f"shared data file {path}")
    return path
