"""The documentation keeps up with the program.

Every command and every option of the CLI is in docs/reference.md, under the command's own
heading, and the synopsis there names no option the command lacks; every command and
parameter has a help text; README.md stays a front door (at most 150 lines) and no link of
the documentation leads nowhere, anchors included.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main

from mailer.cli import app

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference.md"
README_MAX_LINES = 150

# The pages whose links are checked: the front door, the manual, the benchmarks.
PAGES = [README, *sorted(DOCS.glob("*.md")), ROOT / "benchmarks" / "README.md"]
# The pages whose repository paths (`mailer/sending/smtp.py`) must exist: the source layout
# moves, and a manual that names a file that is gone sends its reader nowhere. (The
# benchmarks' results name the modules of the commit they measured; the lead keeps
# docs/architecture.md.)
MANUAL = [page for page in PAGES[:-1] if page.name != "architecture.md"]
REPOSITORY_PATH = re.compile(
    r"`((?:mailer|tests|benchmarks|templates|scripts|examples|docs)/[^`\s]*)`"
)


def _walk(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command of the CLI, the root group and sub-groups included, with its path."""
    yield path, command
    for name, child in sorted(getattr(command, "commands", {}).items()):
        yield from _walk(child, (*path, name))


ROOT_COMMAND = typer.main.get_command(app)
ALL_COMMANDS = list(_walk(ROOT_COMMAND))
# What the reference gives a section of its own: the root (global options) and every command
# that runs something (a group such as `subscribers` only holds its sub-commands).
DOCUMENTED = [(p, c) for p, c in ALL_COMMANDS if not p or not getattr(c, "commands", None)]


def _name(path: tuple[str, ...]) -> str:
    return " ".join(("mailer", *path))


def _options(command: Any) -> list[str]:
    """Every spelling of every visible option (`--yes` and `-y`); --help is click's own."""
    return [
        spelling
        for param in command.params
        if param.param_type_name == "option" and not getattr(param, "hidden", False)
        for spelling in (*param.opts, *param.secondary_opts)
    ]


def _without_code(markdown: str) -> str:
    """The text with fenced blocks and inline code removed (links there are not links)."""
    markdown = re.sub(r"^```.*?^```", "", markdown, flags=re.MULTILINE | re.DOTALL)
    return re.sub(r"`[^`\n]*`", "", markdown)


def _headings(markdown: str) -> list[str]:
    outside_code = re.sub(r"^```.*?^```", "", markdown, flags=re.MULTILINE | re.DOTALL)
    return re.findall(r"^#{1,6} +(.+?) *#*$", outside_code, flags=re.MULTILINE)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for heading in _headings(page.read_text(encoding="utf-8")):
        slug = _slug(heading)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def _sections(markdown: str) -> dict[str, str]:
    """The reference's sections, by command: "## `mailer send`" up to the next "## "."""
    parts = re.split(r"^## +`(mailer[^`]*)` *$", markdown, flags=re.MULTILINE)
    return {name.strip(): body for name, body in zip(parts[1::2], parts[2::2], strict=True)}


SECTIONS = _sections(REFERENCE.read_text(encoding="utf-8"))


def _params(commands: list[tuple[tuple[str, ...], Any]]) -> list[Any]:
    return [pytest.param(path, command, id=_name(path)) for path, command in commands]


@pytest.mark.parametrize(("path", "command"), _params(DOCUMENTED))
def test_every_command_and_option_is_in_the_reference(path: tuple[str, ...], command: Any) -> None:
    name = _name(path)
    assert name in SECTIONS, f"docs/reference.md has no section '## `{name}`'"
    section = SECTIONS[name]
    missing = [
        option for option in _options(command)
        if not re.search(rf"`{re.escape(option)}(?![\w-])", section)
    ]
    assert not missing, f"{name}: options missing from its section of docs/reference.md: {missing}"


@pytest.mark.parametrize(("path", "command"), _params(DOCUMENTED))
def test_the_reference_synopsis_names_only_real_options(
    path: tuple[str, ...], command: Any
) -> None:
    name = _name(path)
    section = SECTIONS.get(name, "")
    synopsis = re.search(r"^```\n(.*?)^```", section, flags=re.MULTILINE | re.DOTALL)
    assert synopsis, f"{name}: its section of docs/reference.md starts no synopsis block"
    assert synopsis.group(1).startswith(name), f"{name}: the synopsis names another command"
    real = {*_options(command), "--help", "-h"}
    unknown = set(re.findall(r"(?<![\w-])--?[a-z][\w-]*", synopsis.group(1))) - real
    assert not unknown, f"{name}: the synopsis names options it does not have: {sorted(unknown)}"


def test_the_reference_documents_no_command_that_does_not_exist() -> None:
    assert set(SECTIONS) <= {_name(path) for path, _ in ALL_COMMANDS}


@pytest.mark.parametrize(("path", "command"), _params(ALL_COMMANDS))
def test_every_command_and_parameter_has_a_help_text(path: tuple[str, ...], command: Any) -> None:
    assert (command.help or "").strip(), f"{_name(path)} has no help text"
    silent = [
        param.name for param in command.params
        if not (getattr(param, "help", "") or "").strip()
    ]
    assert not silent, f"{_name(path)}: parameters without help: {silent}"


def test_the_readme_is_a_front_door() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move the detail to docs/"
    )


def test_the_readme_keeps_the_safety_line_and_the_setup_commands() -> None:
    readme = README.read_text(encoding="utf-8")
    safety = "**`mailer send` sends for real — start with `--dry-run`, `--limit` or `--outbox`.**"
    assert safety in readme
    assert "./scripts/quickstart" in readme
    assert "./scripts/test" in readme


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_leads_somewhere(page: Path) -> None:
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", _without_code(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        linked = (page.parent / file_part).resolve() if file_part else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(f"{target}: no such heading")
    assert not broken, f"{page.relative_to(ROOT)}: broken links: {broken}"


@pytest.mark.parametrize("page", MANUAL, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_repository_path_the_manual_names_exists(page: Path) -> None:
    def exists(name: str) -> bool:
        path = ROOT / name.rstrip("/")
        # A module split into a package (`dsn.py` -> `dsn/`) is still where the text says.
        return path.exists() or (path.suffix == ".py" and path.with_suffix("").is_dir())

    named = REPOSITORY_PATH.findall(page.read_text(encoding="utf-8"))
    gone = sorted({name for name in named if not exists(name)})
    assert not gone, f"{page.relative_to(ROOT)} names paths that do not exist: {gone}"
