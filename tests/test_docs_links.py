"""The documentation's relative links resolve: every link in README.md, RELIABILITY.md and docs/*.md that is not
a URL points at a file or folder of the repository and, with a #fragment into a Markdown page, at one of that
page's headings (GitHub's anchors). Links inside code and HTML comments are not links and are not read."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted([REPO / "README.md", REPO / "RELIABILITY.md", *(REPO / "docs").glob("*.md")])

FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.S | re.M)
COMMENT = re.compile(r"<!--.*?-->", re.S)
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.+?)[ \t#]*$", re.M)
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:|^//")


def prose(text: str) -> str:
    """The text a reader sees as Markdown, minus code blocks, HTML comments and inline code."""
    return INLINE_CODE.sub("", COMMENT.sub("", FENCE.sub("", text)))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: its rendered text (code marks, link targets and emphasis dropped), lower case,
    every character but letters, digits, '_', '-' and spaces removed, spaces turned into '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor of a Markdown page: heading slugs (a repeated slug gets -1, -2, ... as on GitHub) and
    explicit <a name/id> anchors."""
    text = COMMENT.sub("", FENCE.sub("", page.read_text()))
    seen: dict[str, int] = {}
    found = set(HTML_ANCHOR.findall(text))
    for heading in HEADING.findall(text):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def broken_links(page: Path, root: Path = REPO) -> list[str]:
    """Each relative link of `page` that does not resolve, with the reason."""
    problems = []
    for target in LINK.findall(prose(page.read_text())):
        if not target or SCHEME.match(target):
            continue
        path, _, fragment = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if root.resolve() not in [resolved, *resolved.parents]:
            problems.append(f"{target}: leaves the repository")
        elif not resolved.exists():
            problems.append(f"{target}: no such file")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            problems.append(f"{target}: no heading '#{fragment}' in {resolved.relative_to(root.resolve())}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    assert broken_links(page) == []


def test_the_pages_are_all_linked_from_the_readme():
    """A page nobody links to is a page nobody reads: README links every docs page (directly or one step on)."""
    linked = set()
    for page in [REPO / "README.md", *(REPO / "docs").glob("*.md")]:
        for target in LINK.findall(prose(page.read_text())):
            if target and not SCHEME.match(target) and target.partition("#")[0]:
                linked.add((page.parent / target.partition("#")[0]).resolve())
    assert [p.name for p in PAGES if p.resolve() not in linked and p.name != "README.md"] == []


def test_the_readme_is_a_front_page():
    assert len((REPO / "README.md").read_text().splitlines()) <= 200


def test_the_checker_finds_what_is_broken(tmp_path):
    """Missing files, missing anchors and links that leave the repository are found; links in code, in comments
    and to URLs are not read; repeated headings and headings with code marks and punctuation get GitHub's anchors."""
    repo = tmp_path / "repo"
    (repo / "docs").mkdir(parents=True)
    (repo / "docs" / "b.md").write_text("# Title\n## The `x.y` key: what it does\n## Again\n## Again\n"
                                        "```\n## not a heading\n```\n")
    (tmp_path / "elsewhere.md").write_text("# Elsewhere\n")
    page = repo / "a.md"
    page.write_text("[ok](docs/b.md) [ok](docs/b.md#the-xy-key-what-it-does) [ok](docs/b.md#again-1) [ok](#top)\n"
                    "<a name=\"top\"></a> [url](https://example.com/x.md) ![img](docs)\n"
                    "[gone](docs/c.md) [bad anchor](docs/b.md#not-a-heading) [out](../elsewhere.md)\n"
                    "`[code](nowhere.md)` <!-- [comment](nowhere.md) -->\n```\n[fenced](nowhere.md)\n```\n")
    assert broken_links(page, root=repo) == [
        "docs/c.md: no such file", "docs/b.md#not-a-heading: no heading '#not-a-heading' in docs/b.md",
        "../elsewhere.md: leaves the repository"]
