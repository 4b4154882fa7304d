"""MkDocs hook: the guides are the README's sections, cut at its ``## `` headings at build time
(the README stays the one text), with its links to ``docs/...`` made relative to the site."""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File, Files

README = Path(__file__).parents[1] / "README.md"

#: Each guide page and the README heading it starts at (it runs to the next ``## ``).
GUIDES = {
    "guide/library.md": "The library in your own loop",
    "guide/lab.md": "The lab: `reglab compare`",
    "guide/own-model-and-data.md": "Your own model and data",
    "guide/lightning.md": "Inside Lightning",
    "guide/transformers.md": "Inside the Hugging Face Trainer",
    "guide/tensorboard.md": "Curves in TensorBoard",
    "guide/tuning.md": "Tuning strengths, regularization paths, studies across machines",
    "guide/development.md": "Development",
}


def sections(text: str) -> tuple[str, dict[str, str]]:
    """The README's opening (before its first ``## ``) and each ``## `` section by heading,
    outside fenced code blocks."""
    opening, found, heading, lines, fenced = [], {}, None, [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("## "):
            if heading is not None:
                found[heading] = "\n".join(lines)
            heading, lines = line[3:].strip(), []
            continue
        (opening if heading is None else lines).append(line)
    if heading is not None:
        found[heading] = "\n".join(lines)
    return "\n".join(opening), found


def _links(text: str, depth: int) -> str:
    """README links to ``docs/x.md`` as the site's ``x.md``, from a page ``depth`` folders
    down."""
    up = "../" * depth
    return re.sub(r"\]\(docs/([^)]+)\)", lambda m: f"]({up}{m.group(1)})", text)


def on_files(files: Files, config) -> Files:
    opening, found = sections(README.read_text())
    missing = [h for h in GUIDES.values() if h not in found]
    unused = [h for h in found if h not in GUIDES.values()]
    if missing or unused:
        raise ValueError(
            f"README.md's sections and docs/hooks.py's GUIDES differ: not in the README "
            f"{missing}, not in GUIDES {unused}; update GUIDES and mkdocs.yml's nav"
        )
    pages = {"index.md": _links(opening, 0)}
    for uri, heading in GUIDES.items():
        pages[uri] = f"# {heading}\n\n" + _links(found[heading], uri.count("/"))
    for uri, content in pages.items():
        files.append(File.generated(config, uri, content=content))
    return files


_ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|exc|obj):(?=<code>)")


def on_page_content(html: str, page, config, files) -> str:
    """Docstrings name objects in Sphinx's roles (``:func:`reglab.fit```): show the name
    alone."""
    return _ROLE.sub("", html)
