"""Rewrite the machine paths in committed results into the path rule's form (docs/ARCHITECTURE.md).

Run records and reports written before the path rule (kedit/runs/portable.py) hold absolute paths
of the machines they ran on: the data folder, temporary run folders, the checkout. This script
rewrites each known machine prefix into what the rule writes today, in every text file under the
given folders (default: docs/results), and then fails, naming file and line, if any absolute path
of a machine is left (a prefix it does not know: add it to PREFIXES with the reason).

    python bench/scrub_paths.py            # rewrite docs/results in place
    python bench/scrub_paths.py --check    # only list what would change and what is left

Text files only (PNG and other binary files are skipped); in HTML the base64 ``data:`` images are
left untouched, so an image's bytes can never be "rewritten". The same rewrite applied twice
changes nothing.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# (machine prefix, what the path rule writes instead, why that is the same place)
PREFIXES = (
    ("/work/shared/data/", "../shared/data/",
     "the project's data root, beside the checkout /work/main (the rule writes it relative to the repository)"),
    ("/tmp/data/", "../shared/data/",
     "the GPU session's copy of the data root: the runs record the sha256 of the files in ../shared/data "
     "(counterfact-easyedit bfe31a708193…, zsre e62596101d8e…)"),
    ("/tmp/kgpu/runs/", "runs/gpu/",
     "the GPU campaign's run folders (bench/gpu_campaign.py --work /tmp/kgpu), packed into runs/gpu on the CPU "
     "machine, where the committed reports were made from"),
    ("/tmp/runs4/", "runs/", "the small end-to-end runs' folders"),
    ("/work/main/", "", "the repository root itself"),
)
MACHINE = re.compile(r"(?<![\w.~-])/(?:tmp|root|home|work)/[^\s\"'`|)<>\]]*")
DATA_URI = re.compile(r"data:[a-z]+/[a-z0-9.+-]+;base64,[A-Za-z0-9+/=]+")


def read_text(path: Path) -> str | None:
    """The file as text, or None for a binary file."""
    data = path.read_bytes()
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _outside_data_uris(text: str, change) -> str:
    """``change`` applied to the text between base64 data URIs, the URIs kept byte for byte."""
    pieces, last = [], 0
    for match in DATA_URI.finditer(text):
        pieces += [change(text[last:match.start()]), match.group(0)]
        last = match.end()
    return "".join([*pieces, change(text[last:])])


def scrub(text: str) -> str:
    def change(part: str) -> str:
        for prefix, replacement, _ in PREFIXES:
            part = part.replace(prefix, replacement)
        return part

    return _outside_data_uris(text, change)


def leftovers(text: str) -> list[tuple[int, str]]:
    """(line number, path) of every machine path outside data URIs."""
    found = []
    for number, line in enumerate(DATA_URI.sub("", text).splitlines(), start=1):
        found += [(number, match.group(0)) for match in MACHINE.finditer(line)]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path, default=[REPO / "docs" / "results"])
    parser.add_argument("--check", action="store_true", help="change nothing; list what would change and what is left")
    args = parser.parse_args(argv)
    changed, left = 0, []
    for folder in args.folders:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            text = read_text(path)
            if text is None:
                continue
            new = scrub(text)
            if new != text:
                changed += 1
                print(f"{'would rewrite' if args.check else 'rewrote'} {path.relative_to(REPO)}")
                if not args.check:
                    path.write_text(new, encoding="utf-8")
            left += [(path, number, found) for number, found in leftovers(new)]
    for path, number, found in left:
        print(f"{path.relative_to(REPO)}:{number}: machine path left: {found}", file=sys.stderr)
    print(f"{changed} file(s) {'to rewrite' if args.check else 'rewritten'}; {len(left)} machine path(s) left")
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
