"""The README and docs/ hold together: every relative link points at a file that exists (and, with
a ``#fragment`` into a markdown page, at one of its headings), and the README stays short."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 150
# [text](target) outside code; a target may carry a "title" after a space.
_LINK = re.compile(r"(?<!\!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_CODE = re.compile(r"`[^`\n]*`")


def _prose(text: str) -> str:
    """The page without fenced blocks and inline code, where brackets are not links."""
    return _CODE.sub("", _FENCE.sub("", text))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # a link's text only
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in _FENCE.sub("", page.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = _slug(match.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def links(page: Path) -> list[str]:
    return _LINK.findall(_prose(page.read_text(encoding="utf-8")))


def broken(page: Path) -> list[str]:
    """The page's relative links that point nowhere, each with why."""
    bad = []
    for target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        path_part, _, fragment = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.exists():
            bad.append(f"{target}: no file {dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest}")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            bad.append(f"{target}: no heading #{fragment} in {dest.name}")
    return bad


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page: Path) -> None:
    bad = broken(page)
    assert not bad, f"{page.name}: " + "; ".join(bad)


def test_readme_is_short() -> None:
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; at most {README_MAX_LINES}"


def test_the_checker_finds_what_is_broken(tmp_path: Path) -> None:
    """A missing file, a missing heading and a link into code all behave as meant."""
    (tmp_path / "other.md").write_text("# Other page\n\n## A `code` heading (two)\n")
    page = tmp_path / "page.md"
    page.write_text(
        "See [ok](other.md#a-code-heading-two), [top](#title), [web](https://example.com).\n"
        "# Title\n[gone](missing.md) and [no heading](other.md#nowhere).\n"
        "`[not a link](nowhere.md)`\n```\n[nor this](nowhere.md)\n```\n"
    )
    assert broken(page) == ["missing.md: no file " + str((tmp_path / "missing.md").resolve()),
                            "other.md#nowhere: no heading #nowhere in other.md"]  # fmt: skip


def test_every_rayline_variable_is_documented() -> None:
    """docs/configuration.md names every ``RAYLINE_*`` variable the package reads or sets."""
    source = "\n".join(p.read_text(encoding="utf-8") for p in (REPO / "src" / "rayline").rglob("*.py"))
    used = set(re.findall(r"\bRAYLINE_[A-Z0-9_]+\b", source))
    documented = set(re.findall(r"`(RAYLINE_[A-Z0-9_]+)`", (REPO / "docs" / "configuration.md").read_text()))
    assert used, "no RAYLINE_ variable found in src/rayline: the search is wrong"
    assert sorted(used - documented) == []
