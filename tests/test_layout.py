"""The house keeps its plan: imports run one way, from `cli` down to `core`; no package reaches
into another's private modules; no module grows past ~400 lines; light commands load no
heavy dependency; every error the CLI can show is drawn in `mailer.core.errors`.

The layers, bottom up (a module may import its own package and any lower layer):

    core                      errors, states, clock, config, tokens, value types
    store                     SQL: engine, models, migrations, statements
    imports, messages         CSV -> subscribers;  campaign folder -> message bytes
    sending, bounces, privacy the send and retry runs; bounce reports; purge
    web                       the unsubscribe page
    api                       one function per user action
    cli                       parsing, one api call, printing
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import mailer
from mailer.core import errors

PACKAGE = Path(mailer.__file__).parent
LAYERS: dict[str, int] = {
    "core": 0,
    "store": 1,
    "imports": 2,
    "messages": 2,
    "sending": 3,
    "bounces": 3,
    "privacy": 3,
    "web": 4,
    "api": 5,
    "cli": 6,
    "__main__": 7,
}
MAX_LINES = 400
# What the CLI may import: the api and the core (settings, errors, states), nothing past them.
CLI_MAY_IMPORT = ("mailer.api", "mailer.core", "mailer.cli")
HEAVY = ("aiosmtplib", "starlette", "uvicorn")


def _modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(relative.parts)
        if parts[-1] == "__init__":
            parts.pop()
        found.append((".".join(parts), path))
    return found


def _imports(name: str, path: Path) -> list[tuple[int, str]]:
    """Every mailer module `name` imports (at module level or inside a function)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found.append((node.lineno, base))
            # `from mailer.store import deliveries`: the names may be modules themselves
            folder = PACKAGE.parent.joinpath(*base.split("."))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names
                      if (folder / f"{alias.name}.py").is_file() or (folder / alias.name).is_dir()]
    return [(line, target) for line, target in found
            if target == "mailer" or target.startswith("mailer.")]


def _layer(module: str) -> tuple[str, int] | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None  # the root package: __version__ only
    return parts[1], LAYERS[parts[1]]


def test_every_package_has_a_layer() -> None:
    tops = {name.split(".")[1] for name, _ in _modules() if "." in name}
    missing = tops - set(LAYERS)
    assert not missing, f"give these a layer in this test and in docs/architecture.md: {missing}"


def test_imports_run_one_way_down() -> None:
    upward = []
    for name, path in _modules():
        own = _layer(name)
        if own is None:
            continue
        for line, target in _imports(name, path):
            other = _layer(target)
            if other is None or other[0] == own[0]:
                continue
            if other[1] >= own[1]:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert not upward, "a lower or sibling layer imported:\n" + "\n".join(upward)


def test_no_package_imports_another_packages_private_modules() -> None:
    reaching = []
    for name, path in _modules():
        for line, target in _imports(name, path):
            parts = target.split(".")
            private = next((i for i, part in enumerate(parts) if part.startswith("_")), None)
            if private is None or parts[private] == "__main__":
                continue
            owner = ".".join(parts[:private])
            if not (name == owner or name.startswith(owner + ".")):
                reaching.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert not reaching, "\n".join(reaching)


def test_the_cli_calls_the_api_only() -> None:
    reaching = []
    for name, path in _modules():
        if not name.startswith("mailer.cli"):
            continue
        for line, target in _imports(name, path):
            if target != "mailer" and not target.startswith(CLI_MAY_IMPORT):
                reaching.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert not reaching, "the CLI reaches past the api:\n" + "\n".join(reaching)


def test_no_module_is_over_the_size_limit() -> None:
    long = {
        str(path.relative_to(PACKAGE.parent)): lines
        for _, path in _modules()
        if "migrations" not in path.parts
        and (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"split these by job: {long}"


def test_no_two_module_names_differ_by_one_letter() -> None:
    def close(a: str, b: str) -> bool:
        if a == b or abs(len(a) - len(b)) > 1:
            return False
        if len(a) == len(b):
            return sum(x != y for x, y in zip(a, b, strict=True)) == 1
        short, long_ = sorted((a, b), key=len)
        return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))

    names = sorted({n.rsplit(".", 1)[-1].lstrip("_") for n, _ in _modules()} - {"", "mailer"})
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:] if close(a, b)]
    assert not pairs


@pytest.mark.parametrize(
    "command",
    [["--help"], ["status"], ["import", "--help"], ["subscribers", "list"]],
    ids=lambda c: " ".join(c),
)
def test_light_commands_load_no_smtp_or_web_stack(tmp_path: Path, command: list[str]) -> None:
    code = (
        "import sys\n"
        "from mailer.cli import main\n"
        f"try:\n    main({command!r})\nexcept SystemExit:\n    pass\n"
        f"loaded = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
        "print('LOADED', loaded)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "MAILER_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )
    assert "LOADED []" in done.stdout, done.stdout + done.stderr


def test_every_error_is_drawn_in_the_tree() -> None:
    for info in pkgutil.walk_packages(mailer.__path__, "mailer."):
        if info.name == "mailer.__main__" or ".migrations" in info.name:
            continue
        importlib.import_module(info.name)
    seen: set[type[errors.MailerError]] = set()
    pending: list[type[errors.MailerError]] = [errors.MailerError]
    while pending:
        cls = pending.pop()
        if cls in seen or not cls.__module__.startswith("mailer."):
            continue
        seen.add(cls)
        pending += cls.__subclasses__()
    tree = errors.__doc__ or ""
    missing = sorted(cls.__name__ for cls in seen if f" {cls.__name__} " not in tree)
    assert not missing, f"draw these in mailer/core/errors.py's tree: {missing}"
    outside = sorted(
        f"{cls.__module__}.{cls.__name__}" for cls in seen
        if cls.__module__ != errors.__name__ and f"({cls.__module__}" not in tree
    )
    assert not outside, f"say in the tree where these live: {outside}"
