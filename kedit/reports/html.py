"""A markdown report as one self-contained HTML page: images inlined as base64 data URIs.

The page loads nothing from anywhere: its Content-Security-Policy allows only inline styles and
``data:`` images, so a page that tried to fetch a file or run a script would be refused by the
browser (and the report test would see the violation). Raw HTML in the markdown is escaped, so a
run name or a case text cannot inject markup.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path, PurePosixPath

from markdown_it import MarkdownIt

from kedit.errors import KeditError

CONTENT_SECURITY_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
MEDIA_TYPES = {".png": "image/png"}
STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 72rem;
       padding: 0 1rem; color: #1a1a1a; line-height: 1.45; }
h1, h2, h3 { line-height: 1.2; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; margin-top: 2.2rem; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.9rem; display: block; overflow-x: auto; }
th, td { border: 1px solid #d0d0d0; padding: 0.25rem 0.55rem; }
th { background: #f3f3f3; }
tbody tr:nth-child(even) { background: #fafafa; }
td[style*="right"] { font-variant-numeric: tabular-nums; }
code { background: #f3f3f3; padding: 0 0.2rem; border-radius: 3px; font-size: 0.88em; }
img { max-width: 100%; height: auto; display: block; margin: 0.8rem 0; }
em { color: #555; }
"""


def data_uri(path: Path) -> str:
    """A file as a ``data:`` URI (base64); only the image types a report writes are accepted."""
    media_type = MEDIA_TYPES.get(path.suffix.lower())
    if media_type is None:
        raise KeditError(f"cannot inline {path.name}: only {', '.join(MEDIA_TYPES)} images are embedded in reports")
    return f"data:{media_type};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _resolve_image(source: str, directory: Path) -> Path:
    """An image referenced by the markdown, which must be a file inside ``directory``."""
    relative = PurePosixPath(source)
    path = (directory / relative).resolve()
    if relative.is_absolute() or ".." in relative.parts or not path.is_file():
        raise KeditError(f"the report refers to image {source!r}, which is not a file inside {directory}")
    return path


def markdown_to_html(markdown: str, directory: str | Path, title: str) -> str:
    """Render ``markdown`` (GitHub-style tables) to a whole HTML page; images are read from ``directory``."""
    directory = Path(directory).resolve()
    parser = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = parser.parse(markdown)
    for token in tokens:
        for child in token.children or ():
            if child.type == "image":
                child.attrSet("src", data_uri(_resolve_image(str(child.attrGet("src")), directory)))
    body = parser.renderer.render(tokens, parser.options, {})
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CONTENT_SECURITY_POLICY}\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}</body>\n</html>\n"
    )
