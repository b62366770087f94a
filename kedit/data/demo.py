"""The built-in demo set: facts written for kedit that the bundled SmolLM2 answers correctly.

Each case has at least two rephrases and two neighbourhood prompts (other subjects, same kind of
relation) whose answers the unedited model also gets right, so locality is measurable.
"""

from __future__ import annotations

from importlib.resources import files

from kedit.requests import Case, load_cases

DEMO_FILE = "demo_facts.json"


def demo_cases(limit: int | None = None) -> list[Case]:
    cases = load_cases(files("kedit.data").joinpath(DEMO_FILE))
    return cases[:limit] if limit else cases
