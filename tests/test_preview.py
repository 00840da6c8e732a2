"""`mailer preview` and the pre-flight check, through the CLI, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
import shutil
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import pytest

from tests.conftest import REPO_TEMPLATES, write_csv

EXAMPLE = Path(__file__).parent.parent / "examples" / "abonnes-excel.csv"


@pytest.fixture
def listed(cli, tmp_path: Path):  # type: ignore[no-untyped-def]
    """The example French Excel list imported, and the project's templates in ./templates."""
    shutil.copytree(REPO_TEMPLATES, tmp_path / "templates")
    assert cli("import", str(EXAMPLE)).code == 0
    return cli


def _eml(cli, *args: str) -> EmailMessage:  # type: ignore[no-untyped-def]
    result = cli("preview", "closure-notice", "--format", "eml", *args)
    assert result.code == 0, result.stderr
    data = result.stdout.encode("utf-8")
    message = BytesParser(policy=policy.strict).parsebytes(data)
    assert isinstance(message, EmailMessage)
    for part in message.walk():
        assert not part.defects
    return message


def test_preview_shows_the_personal_french_announcement(listed) -> None:  # type: ignore[no-untyped-def]
    result = listed("preview", "closure-notice", "--email", "helene.dupont@exemple.fr")
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "From: Cime <contact@cime.example.org>"
    assert lines[1] == "To: Hélène Dupont <helene.dupont@exemple.fr>"
    assert "Subject: Le Comité d’information et de mobilisation pour l’emploi (Cime) a cessé " \
           "ses activités en mars 2007" in lines
    body = result.stdout.split("\n\n", 1)[1]
    assert body.startswith("Bonjour Madame Dupont,\n\nVous vous êtes abonnés")
    assert "Martine Buron" in body
    assert re.search(r"Se désabonner : https://cime\.example\.org/desabonnement/\S+\n$", body)
    assert result.stderr == ""


def test_preview_defaults_to_the_first_active_subscriber(listed) -> None:  # type: ignore[no-untyped-def]
    result = listed("preview", "closure-notice")
    assert "To: Hélène Dupont <helene.dupont@exemple.fr>" in result.stdout


def test_preview_eml_passes_a_strict_parse(listed) -> None:  # type: ignore[no-untyped-def]
    message = _eml(listed, "--email", "Francois.Lefevre@exemple.fr")
    assert message["To"].addresses[0].display_name == "François Lefèvre"
    assert message.get_content_type() == "multipart/alternative"
    text, html = message.iter_parts()
    assert text.get_content().startswith("Bonjour Monsieur Lefèvre,")
    assert "<p>Bonjour Monsieur Lefèvre,</p>" in html.get_content()
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_preview_html(listed) -> None:  # type: ignore[no-untyped-def]
    result = listed("preview", "closure-notice", "--email", "zoe.oeuvray@exemple.fr",
                    "--format", "html")
    assert result.stdout.startswith("<!DOCTYPE html>")
    assert "<p>Bonjour Madame Œuvray,</p>" in result.stdout


def test_preview_of_an_idn_address(listed) -> None:  # type: ignore[no-untyped-def]
    message = _eml(listed, "--email", "jurgen@bücher.de")
    assert message["To"].addresses[0].addr_spec == "jurgen@xn--bcher-kva.de"


def test_the_unsubscribe_link_of_a_preview_unsubscribes(listed) -> None:  # type: ignore[no-untyped-def]
    message = _eml(listed, "--email", "anais.ndiaye@exemple.fr")
    match = re.search(r"/desabonnement/([^>\s]+)>", str(message["List-Unsubscribe"]))
    assert match is not None
    token = match.group(1)
    assert "anais" not in token
    text = message.get_body(("plain",))
    assert text is not None
    assert token in text.get_content()
    result = listed("subscribers", "unsubscribe", "--token", token)
    assert result.code == 0, result.stderr
    assert "anais.ndiaye@exemple.fr unsubscribed" in result.stdout
    again = listed("preview", "closure-notice", "--email", "anais.ndiaye@exemple.fr")
    assert "is unsubscribed: a send skips them" in again.stderr


def test_an_unknown_subscriber_or_campaign_is_an_error(listed) -> None:  # type: ignore[no-untyped-def]
    missing = listed("preview", "closure-notice", "--email", "nobody@exemple.fr")
    assert missing.code == 1
    assert missing.stderr == "Error: nobody@exemple.fr is not in the list\n"
    unknown = listed("preview", "fermeture")
    assert unknown.code == 1
    assert unknown.stderr.startswith("Error: unknown campaign 'fermeture'")
    assert "Hint: campaigns in templates: closure-notice" in unknown.stderr


@pytest.mark.usefixtures("database_url")
def test_preview_with_no_subscriber_says_what_to_do(cli, tmp_path: Path) -> None:
    shutil.copytree(REPO_TEMPLATES, tmp_path / "templates")
    (tmp_path / "empty.csv").write_text("email\n", encoding="utf-8")
    assert cli("import", str(tmp_path / "empty.csv")).code == 0  # preview makes no database
    result = cli("preview", "closure-notice")
    assert result.code == 1
    assert result.stderr.startswith("Error: no active subscriber to preview\nHint: import")


def test_a_template_error_is_one_line_with_file_and_line(listed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    body = tmp_path / "templates" / "closure-notice" / "body.txt"
    body.write_text(body.read_text(encoding="utf-8").replace(
        "{% block body %}\n", "{% block body %}\n{{ subscriber.prenom }}\n"), encoding="utf-8")
    for args in (["--email", "helene.dupont@exemple.fr"], ["--check"]):
        result = listed("preview", "closure-notice", *args)
        assert result.code == 1
        assert "Traceback" not in result.stderr + result.stdout
        assert "templates/closure-notice/body.txt, line 3: undefined variable" in (
            result.stderr + result.stdout
        )
        assert "prenom" in result.stderr + result.stdout


def test_a_broken_template_is_an_error_before_anything_else(listed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    subject = tmp_path / "templates" / "closure-notice" / "subject.txt"
    subject.write_text("{{ association ", encoding="utf-8")
    result = listed("preview", "closure-notice", "--check")
    assert result.code == 1
    assert result.stderr.startswith("Error: ")
    assert "subject.txt, line 1: syntax error" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_check_reports_every_subscriber_and_the_summary(listed) -> None:  # type: ignore[no-untyped-def]
    result = listed("preview", "closure-notice", "--check")
    assert result.code == 0, result.stdout + result.stderr
    assert result.stdout.startswith("closure-notice: 7 of 7 messages ready")
    assert "Domains: exemple.fr 5, association-exemple.fr 1, xn--bcher-kva.de 1" in result.stdout
    assert "Warning: cime.example.org is a placeholder domain" in result.stdout
    report = json.loads(listed("preview", "closure-notice", "--check", "--json").stdout)
    assert report["checked"] == report["ready"] == 7
    assert report["problem_count"] == 0
    assert report["domains"]["exemple.fr"] == 5
    assert report["smtputf8"] == 0


def test_check_names_each_subscriber_with_a_problem(listed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    extra = write_csv(tmp_path / "villes.csv", "email,ville\nville@exemple.fr,Lyon\n")
    assert listed("import", str(extra), "--attribute", "ville").code == 0
    body = tmp_path / "templates" / "closure-notice" / "body.txt"
    body.write_text(body.read_text(encoding="utf-8").replace(
        "{% block body %}\n", "{% block body %}\nÀ {{ subscriber.attributes.ville }} !\n"),
        encoding="utf-8")
    report = json.loads(listed("preview", "closure-notice", "--check", "--json").stdout)
    assert report["checked"] == 8
    assert report["ready"] == 1
    assert report["problem_count"] == 7
    assert {p["email"] for p in report["problems"]} >= {"helene.dupont@exemple.fr"}
    assert all("body.txt, line 3: undefined variable" in p["reason"]
               for p in report["problems"])
    human = listed("preview", "closure-notice", "--check")
    assert human.code == 1
    assert "Problem: helene.dupont@exemple.fr: " in human.stdout


def test_check_warns_about_a_free_mail_sender(listed, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("MAILER_FROM", "Cime <cime.asso@gmail.com>")
    result = listed("preview", "closure-notice", "--check")
    assert "From cime.asso@gmail.com is a free-mail address" in result.stdout
    assert result.code == 0


def test_an_smtputf8_subscriber_is_flagged(listed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    source = write_csv(tmp_path / "u.csv", "email\njosé@exemple.fr\n")
    assert listed("import", str(source)).code == 0
    result = listed("preview", "closure-notice", "--email", "josé@exemple.fr", "--format", "eml")
    assert "needs a relay that offers SMTPUTF8" in result.stderr
    assert "To: josé@exemple.fr" in result.stdout
    report = json.loads(listed("preview", "closure-notice", "--check", "--json").stdout)
    assert report["smtputf8"] == 1
    assert any("SMTPUTF8" in w for w in report["warnings"])
