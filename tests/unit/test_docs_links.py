"""The documentation stands on its own: every relative link in the README, ``docs/`` and the
folder READMEs resolves to a file of this repository (and a ``#fragment`` to a heading of
it). (That no tracked file names a path outside the repository is ``test_repository``'s.)"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]
_SKIPPED_DIRS = {"tests", ".venv", "node_modules"}

#: ``[text](target "title")`` and ``![alt](target)``; ``target`` may be wrapped in ``<>``.
_INLINE = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
#: ``[label]: target`` reference definitions.
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
_FENCE = re.compile(r"^\s*(```|~~~).*?^\s*\1\s*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.MULTILINE)


def _documents() -> list[Path]:
    found = {*ROOT.glob("*.md"), *ROOT.glob("docs/**/*.md")}
    found |= {
        path
        for path in ROOT.glob("*/README.md")
        if path.parent.name not in _SKIPPED_DIRS
        and not path.parent.name.startswith(".")
        and not path.parent.name.endswith(".egg-info")
    }
    return sorted(found)


def _prose(text: str) -> str:
    """The text without code blocks and code spans (links there are not links)."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def _targets(text: str) -> list[str]:
    prose = _prose(text)
    return [m.group(1) for m in _INLINE.finditer(prose)] + [
        m.group(1) for m in _REFERENCE.finditer(prose)
    ]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces
    turned into hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(document: Path) -> set[str]:
    anchors: set[str] = set()
    for heading in _HEADING.findall(_FENCE.sub("", document.read_text(encoding="utf-8"))):
        slug = _slug(heading)
        candidate, n = slug, 0
        while candidate in anchors:
            n += 1
            candidate = f"{slug}-{n}"
        anchors.add(candidate)
    return anchors


def _broken(document: Path, target: str) -> str | None:
    """Why ``target`` (a link in ``document``) does not resolve, or None."""
    if not target or _SCHEME.match(target) or target.startswith("//"):
        return None
    path_part, _, fragment = target.partition("#")
    path_part = unquote(path_part.split("?", 1)[0])
    resolved = document if not path_part else (document.parent / path_part).resolve(strict=False)
    if not resolved.is_relative_to(ROOT):
        return f"{target}: outside the repository"
    if not resolved.exists():
        return f"{target}: no such file"
    if fragment and resolved.suffix == ".md" and fragment not in _anchors(resolved):
        return f"{target}: no heading #{fragment} in {resolved.relative_to(ROOT)}"
    return None


DOCUMENTS = _documents()


def test_the_readme_and_the_docs_folder_are_checked() -> None:
    names = {path.relative_to(ROOT).as_posix() for path in DOCUMENTS}
    assert "README.md" in names
    assert "docs/README.md" in names


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves_inside_the_repository(document: Path) -> None:
    text = document.read_text(encoding="utf-8")
    broken = [b for t in _targets(text) if (b := _broken(document, t)) is not None]
    assert broken == []


def test_a_link_to_a_missing_file_is_reported() -> None:
    document = ROOT / "docs" / "README.md"
    assert _broken(document, "no-such-file.md") == "no-such-file.md: no such file"
    assert _broken(document, "../../elsewhere/SPEC.md") is not None
    assert _broken(document, "https://example.com/x.md") is None


def test_a_fragment_must_name_a_heading() -> None:
    assert _slug("0001 — Our own log follower (not `ProcessApplication`)") == (
        "0001--our-own-log-follower-not-processapplication"
    )
    assert _broken(ROOT / "README.md", "#no-such-heading") is not None
    assert _broken(ROOT / "README.md", "#run-it") is None
