"""Issue 14, items 11 and 12: templates that read well with every optional value empty, and
`mailer campaign new NAME`, a folder that previews and passes the pre-flight at once."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from mailer.core.config import Settings
from mailer.core.people import Recipient
from mailer.messages.campaign import load_campaign
from mailer.messages.factory import MessageFactory
from tests.conftest import REPO_TEMPLATES, write_csv

NOBODY = Recipient(id=1, email="x@exemple.fr", address="x@exemple.fr", key="x@exemple.fr")


def _emptied(templates: Path, name: str) -> None:
    """Every optional value of the campaign made empty; no unsubscribe link either."""
    toml = templates / name / "campaign.toml"
    text = toml.read_text(encoding="utf-8")
    text = re.sub(r'^(blog_url|history_url|link_url|signature|url|mailto) = ".*"$',
                  r'\1 = ""', text, flags=re.MULTILINE)
    text = re.sub(r"^(reply_to|list_id) = .*$", "", text, flags=re.MULTILINE)
    toml.write_text(text, encoding="utf-8")


def _read_badly(text: str) -> list[str]:
    """What an empty value leaves behind when a template does not guard it."""
    bad = [r"Bonjour ,", r" : \.", r" :\s*$", r"<p>\s*</p>", r"<a href=\"\"", r"\n\n\n",
           "téléchargeable", r"\(\)"]
    return [pattern for pattern in bad if re.search(pattern, text, flags=re.MULTILINE)]


@pytest.mark.parametrize("name", ["closure-notice", "scaffolded"])
def test_templates_read_well_with_every_optional_value_empty(
    tmp_path: Path, name: str
) -> None:
    from mailer import api

    templates = tmp_path / "templates"
    shutil.copytree(REPO_TEMPLATES, templates)
    settings = Settings(templates_dir=templates)
    if name == "scaffolded":
        api.new_campaign(settings, name)
    _emptied(templates, name)
    factory = MessageFactory(load_campaign(settings, name), b"k" * 32, "n")
    parts = factory.make(NOBODY, date=__import__("datetime").datetime(2026, 1, 1)).parts
    assert parts.text.startswith("Bonjour,\n\n")
    assert _read_badly(parts.text) == []
    assert parts.html is not None
    assert _read_badly(parts.html) == []
    # the headline comes before the greeting, never under it
    assert parts.html.index("<h1") < parts.html.index("Bonjour,")


@pytest.mark.usefixtures("database_url")
def test_campaign_new_previews_and_passes_the_preflight(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert cli("import", str(write_csv(tmp_path / "l.csv", "email,prenom\na@exemple.fr,Zoé\n"))
               ).code == 0
    created = cli("campaign", "new", "assemblee-generale")
    assert created.code == 0, created.stderr
    folder = tmp_path / "templates" / "assemblee-generale"
    assert sorted(p.name for p in folder.iterdir()) == [
        "body.html", "body.txt", "campaign.toml", "subject.txt"]
    assert (tmp_path / "templates" / "_layout" / "layout.html").is_file()
    toml = (folder / "campaign.toml").read_text(encoding="utf-8")
    for key in ("from", "reply_to", "list_id", "url", "mailto", "list_name", "signature"):
        assert re.search(rf"^#? ?{key} = ", toml, flags=re.MULTILINE), key
    shown = cli("preview", "assemblee-generale")
    assert shown.code == 0, shown.stderr
    assert "Bonjour Zoé," in shown.stdout
    checked = cli("preview", "assemblee-generale", "--check")
    assert checked.code == 0, checked.stdout + checked.stderr
    assert "1 of 1 messages ready" in checked.stdout
    again = cli("campaign", "new", "assemblee-generale")
    assert again.code == 1
    assert "already exists" in again.stderr
    assert cli("campaign", "new", "_layout").code == 1


# --- 15 (part): forget says where copies remain, and cleans an outbox -----------------------


@pytest.mark.usefixtures("database_url")
def test_forget_removes_the_persons_outbox_files_and_names_other_copies(
    cli, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    shutil.copytree(REPO_TEMPLATES, tmp_path / "templates")
    rows = "email,prenom\nzoe@exemple.fr,Zoé\nautre@exemple.fr,Autre\n"
    assert cli("import", str(write_csv(tmp_path / "l.csv", rows))).code == 0
    sent = cli("send", "closure-notice", "--outbox", "outbox")
    assert sent.code == 0, sent.stderr
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 2
    gone = cli("subscribers", "forget", "ZOE@exemple.fr", "--outbox", "outbox")
    assert gone.code == 0, gone.stderr
    left = list((tmp_path / "outbox").glob("*.eml"))
    assert len(left) == 1
    assert b"zoe@exemple.fr" not in left[0].read_bytes()
    assert "1 of their messages removed" in gone.stdout
    for place in ("outbox", "report", "rejects"):
        assert place in gone.stderr
    assert cli("subscribers", "forget", "x@exemple.fr", "--outbox", "nowhere").code == 1
