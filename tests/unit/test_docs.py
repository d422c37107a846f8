"""The README and docs/ stay true to the repository: every relative link and anchor resolves, and
every ``ridestream …`` command they show exists (its ``--help`` succeeds). No broker needed."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
README_MAX_LINES = 250


def markdown_files() -> list[Path]:
    return [README, *sorted((ROOT / "docs").rglob("*.md"))]


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


# --- reading Markdown ------------------------------------------------------------------------

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.S)
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


@dataclass
class Page:
    """A Markdown file split into prose lines (code spans kept) and fenced code blocks."""

    path: Path
    prose: list[tuple[int, str]] = field(default_factory=list)  # (line number, text)
    code: list[tuple[int, str]] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> Page:
        page = cls(path)
        fence: str | None = None
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            opening = _FENCE.match(line)
            if fence is None and opening:
                fence = opening.group(1)[0] * len(opening.group(1))
            elif fence is not None and line.strip().startswith(fence) and not line.strip().strip(fence[0]):
                fence = None
            elif fence is not None:
                page.code.append((number, line))
            else:
                page.prose.append((number, line))
        return page

    def code_spans(self) -> Iterator[tuple[int, str]]:
        for number, line in self.prose:
            for match in _CODE_SPAN.finditer(line):
                yield number, match.group(2).strip()

    def links(self) -> Iterator[tuple[int, str]]:
        """Link and image targets outside code (inline code inside a link's text is fine)."""
        for number, line in self.prose:
            text = _CODE_SPAN.sub("code", line)
            for match in _LINK.finditer(text):
                yield number, match.group(1)
            reference = _REFERENCE.match(text)
            if reference:
                yield number, reference.group(1)

    def anchors(self) -> set[str]:
        """The heading anchors GitHub makes for this page, duplicates numbered -1, -2, …"""
        seen: dict[str, int] = {}
        anchors = set()
        for _, line in self.prose:
            heading = _HEADING.match(line)
            if not heading:
                continue
            slug = github_slug(heading.group(2))
            if slug in seen:
                seen[slug] += 1
                anchors.add(f"{slug}-{seen[slug]}")
            else:
                seen[slug] = 0
                anchors.add(slug)
        return anchors


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text (links and images reduced to their text, code
    spans to their content), lowercased, punctuation other than ``-`` and ``_`` dropped, each
    space a ``-``."""
    text = re.sub(r"!?\[((?:[^\[\]]|\[[^\]]*\])*)\]\([^)]*\)", r"\1", heading)
    text = _CODE_SPAN.sub(lambda m: m.group(2), text)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


# --- links -----------------------------------------------------------------------------------

def broken_links(page: Page, pages: dict[Path, Page]) -> Iterator[str]:
    for number, target in page.links():
        where = f"{rel(page.path)}:{number}: ({target})"
        if not target:
            yield f"{where} empty link target"
            continue
        if _SCHEME.match(target) or target.startswith("//"):
            continue  # http(s), mailto and the like: not checked here
        path_part, _, anchor = target.partition("#")
        path_part = unquote(path_part)
        if path_part:
            base = ROOT if path_part.startswith("/") else page.path.parent
            resolved = (base / path_part.lstrip("/")).resolve()
            if not resolved.exists():
                yield f"{where} no such file or folder: {rel(resolved)}"
                continue
        else:
            resolved = page.path
        if not anchor:
            continue
        anchor = unquote(anchor)
        if resolved.suffix.lower() == ".md" and resolved.is_file():
            target_page = pages.get(resolved) or Page.read(resolved)
            if anchor not in target_page.anchors():
                yield f"{where} no heading with anchor #{anchor} in {rel(resolved)}"
        elif not re.fullmatch(r"L\d+(-L\d+)?", anchor):
            yield f"{where} cannot check anchor #{anchor}: not a Markdown file"


def test_every_relative_link_and_anchor_resolves():
    pages = {path.resolve(): Page.read(path) for path in markdown_files()}
    problems = [problem for page in pages.values() for problem in broken_links(page, pages)]
    assert not problems, "broken links in the README or docs/:\n  " + "\n  ".join(problems)


# --- commands --------------------------------------------------------------------------------

_COMMAND_START = re.compile(r"(?:^|(?<=[\s;&|(]))(?:[\w./-]*/)?ridestream(?=\s|$)")
_SEPARATOR_BEFORE = re.compile(r"(?:^\s*(?:\$\s+)?|(?:&&|\|\||;|\||\$\(|\()\s*)$")
_WORD = re.compile(r"[a-z0-9][a-z0-9_.-]*")


def command_lines(page: Page) -> Iterator[tuple[int, str]]:
    """What follows each ``ridestream`` that starts a command: in code blocks at the start of a
    line or after a shell separator, and in inline code that begins with it."""
    for number, line in page.code:
        for match in _COMMAND_START.finditer(line):
            if _SEPARATOR_BEFORE.search(line[:match.start()]):
                yield number, line[match.end():]
    for number, span in page.code_spans():
        match = _COMMAND_START.match(span)
        if match:
            yield number, span[match.end():]


@dataclass(frozen=True)
class Shown:
    """A command as shown: its leading words (up to the first option or placeholder), and the
    alternatives of its last word written ``a | b | c``."""

    words: tuple[str, ...]
    alternatives: tuple[str, ...] = ()


def leading_words(rest: str) -> Shown:
    tokens = re.split(r"\s{2,}", rest.strip())[0].split()  # two spaces: a description column follows
    words: list[str] = []
    i = 0
    while i < len(tokens) and _WORD.fullmatch(tokens[i]):
        words.append(tokens[i])
        i += 1
    alternatives = []
    while i + 1 < len(tokens) and tokens[i] == "|" and _WORD.fullmatch(tokens[i + 1]):
        alternatives.append(tokens[i + 1])
        i += 2
    return Shown(tuple(words), tuple(alternatives))


def resolve(root: Any, words: tuple[str, ...]) -> tuple[list[str], list[str], str | None]:
    """Walk the command tree (groups have ``commands``; a command's positional parameters are
    its arguments): (the command path, the words left as its arguments, a problem)."""
    command = root
    path: list[str] = []
    for n, word in enumerate(words):
        if not hasattr(command, "commands"):
            arguments = list(words[n:])
            counts = [p.nargs for p in command.params if p.param_type_name == "argument"]
            if -1 not in counts and len(arguments) > sum(counts):
                return path, arguments, (f"`ridestream {' '.join(path)}` takes {sum(counts)} argument(s), "
                                         f"shown with {' '.join(arguments)!r}")
            return path, arguments, None
        sub = command.commands.get(word)
        if sub is None:
            choices = ", ".join(sorted(command.commands))
            return path, [], f"no command `ridestream {' '.join([*path, word])}` (there: {choices})"
        path.append(word)
        command = sub
    return path, [], None


def shown_commands(paths: list[Path]) -> dict[tuple[str, ...], list[str]]:
    """Each command path shown (as words, alternatives expanded) → where it is shown."""
    found: dict[tuple[str, ...], list[str]] = {}
    for path in paths:
        page = Page.read(path)
        for number, rest in command_lines(page):
            shown = leading_words(rest)
            variants = [shown.words]
            if shown.words:
                variants += [(*shown.words[:-1], alternative) for alternative in shown.alternatives]
            for words in variants:
                found.setdefault(words, []).append(f"{rel(path)}:{number}")
    return found


def test_every_ridestream_command_shown_exists():
    from typer.main import get_command
    from typer.testing import CliRunner

    from ridestream.cli import app

    root = get_command(app)
    assert hasattr(root, "commands"), "ridestream's command line is no longer a group of commands"
    shown = shown_commands(markdown_files())
    assert any(len(words) >= 2 for words in shown), "found no `ridestream …` commands: is the parser broken?"
    runner = CliRunner()
    problems = []
    checked: set[tuple[str, ...]] = set()
    for words, places in sorted(shown.items()):
        where = ", ".join(places[:3]) + (" …" if len(places) > 3 else "")
        path, _, problem = resolve(root, words)
        if problem:
            problems.append(f"{where}: {problem}")
            continue
        if tuple(path) in checked:
            continue
        checked.add(tuple(path))
        result = runner.invoke(app, [*path, "--help"])
        if result.exit_code != 0:
            last = (result.output.strip().splitlines() or [repr(result.exception)])[-1]
            problems.append(f"{where}: `ridestream {' '.join(path)} --help` exited {result.exit_code}: {last}")
    assert not problems, "commands shown in the README or docs/ that do not exist:\n  " + "\n  ".join(problems)


# --- the shape of the pages ------------------------------------------------------------------

def test_the_readme_stays_a_front_door():
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines (at most {README_MAX_LINES}): move the detail into a page under docs/")


def test_each_docs_page_opens_with_a_title_and_a_paragraph():
    problems = []
    for path in markdown_files()[1:]:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not lines or not re.match(r"# \S", lines[0]):
            problems.append(f"{rel(path)}: does not start with a `# Title`")
        elif len(lines) < 2 or re.match(r"(#|```|\||[-*] |\d+\. )", lines[1]):
            problems.append(f"{rel(path)}: no opening paragraph under its title")
    assert not problems, "\n".join(problems)


# --- the checks themselves -------------------------------------------------------------------

@pytest.mark.parametrize(("heading", "slug"), [
    ("The wire contract (version 1)", "the-wire-contract-version-1"),
    ("`rides.events.dlq`", "rideseventsdlq"),
    ("Commits and settling: at-least-once", "commits-and-settling-at-least-once"),
    ("0001 — The local broker", "0001--the-local-broker"),
    ("What the numbers say, and what they do not", "what-the-numbers-say-and-what-they-do-not"),
    ("[Linked](x.md) *and* `code_name`", "linked-and-code_name"),
])
def test_anchors_follow_githubs_rules(heading, slug):
    assert github_slug(heading) == slug


def test_duplicate_headings_are_numbered(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Notes\n\n## Setup\n\n```\n## not a heading\n```\n\n## Setup\n\n## Setup\n")
    assert Page.read(page).anchors() == {"notes", "setup", "setup-1", "setup-2"}


def test_commands_are_read_up_to_the_first_option_or_placeholder(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "Run `ridestream offsets show GROUP` or `.venv/bin/ridestream watch --ride ID`.\n\n"
        "```bash\n"
        "ridestream broker start && ridestream topics create   # both\n"
        "ridestream broker stop | status | logs [-f]\n"
        "ridestream consume duration|tip|cost [--model NAME=VERSION]\n"
        "ridestream topics describe          partitions and retention of each\n"
        "echo ridestream is not a command here\n"
        "```\n"
    )
    assert set(shown_commands([page])) == {
        ("offsets", "show"), ("watch",), ("broker", "start"), ("topics", "create"),
        ("broker", "stop"), ("broker", "status"), ("broker", "logs"), ("consume",), ("topics", "describe"),
    }
