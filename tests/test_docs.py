"""The map holds: every link in README.md, docs/*.md and every folder README leads to a file or folder of this
repository, README.md links every reference page and folder README, and it still opens with the two commands."""

from __future__ import annotations

import os
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
SKIPPED_DIRS = {"demo-output", "node_modules", "__pycache__"}
"""Folders that hold no documentation of ours (besides hidden ones such as .venv, .git, .pytest_cache)."""
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*(?:<([^>]*)>|([^)\s]*))(?:\s+[\"'][^)]*[\"'])?\s*\)")
"""`[text](target)`, `![alt](target)`, `[text](<target>)`, `[text](target "title")`: the target is group 1 or 2."""
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
"""A reference definition, `[name]: target`."""
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,}).*?^ {0,3}\1[ \t]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.DOTALL)
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
"""A target with a scheme (https:, mailto:, file:, ...): not a path in this repository."""


def markdown_files() -> list[pathlib.Path]:
    """README.md, docs/*.md, and every README.md below the root outside hidden and generated folders."""
    found = {ROOT / "README.md", *(ROOT / "docs").glob("*.md")}
    for directory, subdirectories, files in os.walk(ROOT):
        subdirectories[:] = [d for d in subdirectories if not d.startswith(".") and d not in SKIPPED_DIRS
                             and not d.endswith(".egg-info")]
        if "README.md" in files:
            found.add(pathlib.Path(directory) / "README.md")
    return sorted(found)


def link_targets(text: str) -> list[str]:
    """Every link target of a Markdown text, leaving out what code blocks and code spans show."""
    prose = CODE_SPAN.sub("", FENCE.sub("", text))
    inline = [bracketed or bare for bracketed, bare in INLINE_LINK.findall(prose)]
    return inline + REFERENCE_LINK.findall(prose)


def link_problem(source: pathlib.Path, target: str) -> str | None:
    """Why `target`, linked from `source`, does not lead to a file or folder of this repository; None if it does."""
    if EXTERNAL.match(target):
        return "points outside the repository; name the reference in plain text instead"
    path = target.split("#", 1)[0]
    if not path:
        return None if target else "is empty"  # `#anchor`: a place in this same file
    if path.startswith("/"):
        return "is an absolute path; write it relative to the Markdown file"
    resolved = (source.parent / path).resolve()
    if not resolved.is_relative_to(ROOT):
        return "leaves the repository"
    if not resolved.exists():
        return f"names {resolved.relative_to(ROOT)}, which does not exist"
    return None


def test_the_link_parser_sees_links_and_skips_code():
    text = ("See [a](a.md#x), ![img](b.png \"title\"), [c](<c d.md>).\n\n[ref]: docs/e.md\n\n"
            "`[not](code.md)` and\n```\n[nor](fenced.md)\n```\n")
    assert link_targets(text) == ["a.md#x", "b.png", "c d.md", "docs/e.md"]


def test_the_link_check_refuses_what_leaves_the_repository():
    readme = ROOT / "README.md"
    assert link_problem(readme, "docs/ingest.md#bad-input") is None
    assert link_problem(readme, "#contents") is None
    assert "outside" in link_problem(readme, "https://example.com")
    assert "outside" in link_problem(readme, "mailto:someone@example.com")
    assert "leaves" in link_problem(readme, "../shared/ARCHITECTURE.md")
    assert "absolute" in link_problem(readme, "/etc/passwd")
    assert "does not exist" in link_problem(readme, "docs/no-such-page.md")


def test_every_link_leads_to_a_file_or_folder_of_the_repository():
    files = markdown_files()
    assert ROOT / "docs" / "extending.md" in files and ROOT / "datasets" / "README.md" in files
    problems = [f"{source.relative_to(ROOT)}: link ({target}) {problem}"
                for source in files for target in link_targets(source.read_text())
                if (problem := link_problem(source, target)) is not None]
    assert not problems, "\n".join(problems)


def test_the_index_links_every_reference_page_and_folder_readme():
    index = ROOT / "README.md"
    linked = {(ROOT / target.split("#", 1)[0]).resolve() for target in link_targets(index.read_text())
              if not EXTERNAL.match(target) and not target.startswith("#")}
    missing = [path.relative_to(ROOT) for path in markdown_files() if path != index and path not in linked]
    assert not missing, f"README.md (the index) does not link {', '.join(map(str, missing))}"


def test_the_index_opens_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    first_block = FENCE.search(text)
    assert first_block is not None and text[: first_block.start()].strip() == "# vlaforge"
    assert "make demo" in first_block.group(0) and "make test" in first_block.group(0)
    assert "Python 3.11" in text[first_block.end():].split("\n\n", 2)[1]
