"""`mailer campaign new NAME`: a new campaign folder to edit."""

from __future__ import annotations

from typing import Annotated

import typer

from mailer import api
from mailer.cli.output import out
from mailer.cli.root import settings_of

campaign_app = typer.Typer(
    help="Campaign folders: create a new one.", no_args_is_help=True, rich_markup_mode=None
)


@campaign_app.command("new")
def new_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The new campaign's folder name.")],
) -> None:
    """Create templates/NAME/ (campaign.toml, subject, text and HTML bodies on the shared
    layout), ready to preview; edit it, then send.

    Example: mailer campaign new assemblee-generale
    """
    folder = api.new_campaign(settings_of(ctx), name)
    out.print(f"Created {folder}/ (campaign.toml, subject.txt, body.txt, body.html).",
              markup=False)
    out.print(f"Edit them, then check: mailer preview {name} && mailer preview {name} --check",
              markup=False)
