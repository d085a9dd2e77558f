"""A source's licence line and citation, read from the files of its folder (one fact, one place).

``LICENSE.md`` holds the terms; its line ``**In one line:** ...`` is the summary recorded in every
store built from the source (README.txt, build.json). ``CITATION.bib`` holds what to cite; the
store records each entry as ``Surname et al., Title, Venue Year``.

The BibTeX reader here handles the subset these files use (``@type{key, field = {value}, ...}``,
``%`` comment lines, braces for case protection); it is written here rather than taken from a
BibTeX library because the files are the project's own and a dependency would be larger than them.
"""
from __future__ import annotations

import re
from pathlib import Path

ONE_LINE = "**In one line:**"


def license_line(folder: Path) -> str:
    """The summary line of ``folder/LICENSE.md`` (text after ``**In one line:**``); '' when absent."""
    path = Path(folder) / "LICENSE.md"
    if not path.is_file():
        return ""
    for line in path.read_text("utf-8").splitlines():
        if line.strip().startswith(ONE_LINE):
            return line.strip()[len(ONE_LINE):].strip()
    return ""


def _fields(body: str) -> dict:
    """``name = {value}`` pairs of one entry body (values may hold nested braces)."""
    out: dict = {}
    for m in re.finditer(r"(\w+)\s*=\s*\{", body):
        depth, i = 1, m.end()
        while i < len(body) and depth:
            depth += {"{": 1, "}": -1}.get(body[i], 0)
            i += 1
        out[m.group(1).lower()] = body[m.end():i - 1]
    return out


def _plain(text: str) -> str:
    """Drop BibTeX braces and accent commands: ``{OpenSurfaces}`` -> OpenSurfaces, ``Doll{\\'a}r`` -> Dollar."""
    text = re.sub(r"\\['`^\"~=.]", "", text)
    return re.sub(r"\s+", " ", text.replace("{", "").replace("}", "")).strip()


def _authors(field: str) -> str:
    names = [a.strip() for a in field.split(" and ") if a.strip()]
    surnames = [_plain(n.split(",")[0]) for n in names]
    if len(surnames) > 2 or (len(surnames) == 2 and surnames[1] == "others"):
        return f"{surnames[0]} et al."
    return " and ".join(surnames)


def citation_line(folder: Path) -> str:
    """``folder/CITATION.bib`` as one line, entries joined by '; '; '' when it holds no entry."""
    path = Path(folder) / "CITATION.bib"
    if not path.is_file():
        return ""
    text = "\n".join(ln for ln in path.read_text("utf-8").splitlines() if not ln.lstrip().startswith("%"))
    out = []
    for chunk in re.split(r"(?=@\w+\s*\{)", text):
        if not chunk.strip().startswith("@"):
            continue
        f = _fields(chunk)
        venue = _plain(f.get("booktitle") or f.get("journal") or "")
        parts = [_authors(f.get("author", "")), _plain(f.get("title", "")), " ".join(p for p in (venue, f.get("year", "")) if p)]
        out.append(", ".join(p for p in parts if p))
    return "; ".join(out)


def folder_terms(module_file: str) -> tuple:
    """(licence line, citation line) of the source folder holding ``module_file`` (a ``__file__``)."""
    folder = Path(module_file).resolve().parent
    return license_line(folder), citation_line(folder)
