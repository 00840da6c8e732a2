"""The `mailer` app itself: its global options, and `main`, the one place where a MailerError
becomes `Error: ...` (and `Hint: ...`) on standard error and the contract's exit code.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from mailer import __version__
from mailer.cli.output import out, stderr
from mailer.core.config import Settings, load_settings
from mailer.core.errors import MailerError

app = typer.Typer(
    name="mailer",
    help="A mailing-list dispatcher: import a list, send a campaign, retry, never twice.\n\n"
    "Example: mailer import subscribers.csv && mailer status",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@dataclass
class Global:
    config: Path | None = None

    def settings(self, **overrides: Any) -> Settings:
        return load_settings(self.config).with_overrides(**overrides)


def settings_of(ctx: typer.Context, **overrides: Any) -> Settings:
    """The settings for this run: defaults < mailer.toml < MAILER_* environment < options."""
    found = ctx.obj if isinstance(ctx.obj, Global) else Global()
    return found.settings(**overrides)


def _version(value: bool) -> None:
    if value:
        out.print(f"mailer {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="Settings file (default: ./mailer.toml or $MAILER_CONFIG).",
            metavar="PATH",
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Settings: defaults < mailer.toml < MAILER_* environment < options."""
    ctx.obj = Global(config)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; MailerError becomes `Error: ...` and its exit code."""
    try:
        app(args=argv, prog_name="mailer")
    except MailerError as exc:
        stderr().print(f"Error: {exc.message}", markup=False)
        if exc.hint:
            stderr().print(f"Hint: {exc.hint}", markup=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        stderr().print("Interrupted.")
        sys.exit(130)
    except SystemExit as exc:
        # Usage errors are the user's to fix: exit 1 as the contract says (click uses 2).
        if exc.code == 2:
            sys.exit(1)
        raise
