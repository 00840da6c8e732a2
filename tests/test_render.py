"""Campaign folders and Jinja2 rendering: metadata checks, greeting, escaping, sandbox, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailer.core.config import Settings
from mailer.core.errors import ConfigError, InputError, NotFoundError, TemplateError
from mailer.core.people import Recipient
from mailer.messages.campaign import load_campaign
from mailer.messages.render import Links, Renderer
from tests.conftest import write_campaign

HELENE = Recipient(
    id=42, email="helene.dupont@exemple.fr", address="helene.dupont@exemple.fr",
    key="helene.dupont@exemple.fr", first_name="Hélène", last_name="Dupont", civility="Mme",
)


def _settings(templates: Path, **overrides: str) -> Settings:
    return Settings(templates_dir=templates).with_overrides(**overrides)


def _render(templates: Path, recipient: Recipient = HELENE, name: str = "closure-notice"):
    campaign = load_campaign(_settings(templates), name)
    return Renderer(campaign).render(recipient, Links.build(campaign, "2a.TOKEN"))


# --- the closure notice --------------------------------------------------------------------


def test_the_closure_notice_is_the_announcement_in_french(templates: Path) -> None:
    parts = _render(templates)
    assert parts.subject == (
        "Le Comité d’information et de mobilisation pour l’emploi (Cime) a cessé ses "
        "activités en mars 2007"
    )
    assert parts.text.startswith("Bonjour Madame Dupont,\n\nVous vous êtes abonnés à la lettre")
    for passage in ("Fondé en mai 1993", "Balise", "Éveilléco", "Martine Buron",
                    "12 février 2007"):
        assert passage in parts.text
        assert passage in (parts.html or "").replace("&nbsp;", " ")
    # history_url is empty in the folder: no download is promised (issue 14, item 11)
    assert "téléchargeable" not in parts.text + (parts.html or "")
    assert parts.text.endswith("https://cime.example.org/desabonnement/2a.TOKEN\n")
    assert parts.html is not None
    assert 'href="https://cime.example.org/desabonnement/2a.TOKEN"' in parts.html
    # No remote images, no tracking: nothing is fetched when the message is opened.
    assert "<img" not in parts.html
    assert 'name="viewport"' in parts.html


@pytest.mark.parametrize(
    ("civility", "first", "last", "greeting"),
    [
        ("Mme", "Hélène", "Dupont", "Bonjour Madame Dupont,"),
        ("M.", "François", "Lefèvre", "Bonjour Monsieur Lefèvre,"),
        ("Mlle", None, "Œuvray", "Bonjour Mademoiselle Œuvray,"),
        ("Dr", "Anaïs", "N'Diaye", "Bonjour Docteur N'Diaye,"),
        (None, "Hélène", "Dupont", "Bonjour Hélène,"),
        (None, "Hélène", None, "Bonjour Hélène,"),
        ("Mme", "Hélène", None, "Bonjour Hélène,"),
        ("Mme", None, None, "Bonjour Madame,"),
        (None, None, "Dupont", "Bonjour,"),
        (None, None, None, "Bonjour,"),
    ],
)
def test_the_greeting_uses_what_is_known_and_never_leaves_a_gap(
    templates: Path, civility: str | None, first: str | None, last: str | None, greeting: str
) -> None:
    recipient = Recipient(id=1, email="a@exemple.fr", address="a@exemple.fr",
                          civility=civility, first_name=first, last_name=last)
    parts = _render(templates, recipient)
    assert parts.text.splitlines()[0] == greeting
    assert parts.html is not None
    assert f"<p>{greeting.replace(chr(39), '&#39;')}</p>" in parts.html
    assert "Bonjour ," not in parts.text


def test_text_is_not_escaped_and_html_is(templates: Path) -> None:
    recipient = Recipient(id=1, email="a@exemple.fr", address="a@exemple.fr",
                          first_name="Hélène & Co <b>", last_name=None)
    parts = _render(templates, recipient)
    assert parts.text.startswith("Bonjour Hélène & Co <b>,\n")
    assert parts.html is not None
    assert "Bonjour Hélène &amp; Co &lt;b&gt;," in parts.html
    assert "<b>," not in parts.html


def test_subscriber_data_is_never_evaluated_as_a_template(templates: Path) -> None:
    recipient = Recipient(id=1, email="a@exemple.fr", address="a@exemple.fr",
                          first_name="{{ 7*7 }}", last_name="{% raw %}")
    parts = _render(templates, recipient)
    assert parts.text.startswith("Bonjour {{ 7*7 }},\n")
    assert "49" not in parts.text.splitlines()[0]


def test_a_line_break_in_a_name_cannot_break_the_subject(tmp_path: Path) -> None:
    write_campaign(tmp_path, "c", {"subject.txt": "Pour {{ subscriber.first_name }} !\n",
                                   "body.txt": "x\n"})
    recipient = Recipient(id=1, email="a@x.fr", address="a@x.fr",
                          first_name="Eve\r\nBcc: victim@example.com")
    assert _render(tmp_path, recipient, "c").subject == "Pour Eve Bcc: victim@example.com !"


def test_a_missing_value_prints_nothing_instead_of_none(tmp_path: Path) -> None:
    write_campaign(tmp_path, "c", {"subject.txt": "S\n",
                                   "body.txt": "[{{ subscriber.first_name }}]\n"})
    assert _render(tmp_path, HELENE.__class__(id=1, email="a@x.fr", address="a@x.fr"),
                   "c").text == "[]\n"


def test_context_variables_come_from_campaign_toml(tmp_path: Path) -> None:
    write_campaign(tmp_path, "c", {
        "campaign.toml": 'from = "A <a@asso.fr>"\n[context]\nville = "Lyon"\n',
        "subject.txt": "{{ ville }} {{ campaign.name }} {{ sender.address }}\n",
        "body.txt": "{{ subscriber.attributes.Ville }}\n",
    })
    recipient = Recipient(id=1, email="a@x.fr", address="a@x.fr", attributes={"Ville": "Nantes"})
    parts = _render(tmp_path, recipient, "c")
    assert parts.subject == "Lyon c a@asso.fr"
    assert parts.text == "Nantes\n"


# --- template errors: file, line and variable, before anything is sent ---------------------


def test_an_undefined_variable_names_the_file_line_and_variable(tmp_path: Path) -> None:
    folder = write_campaign(tmp_path, "c", {"subject.txt": "S\n",
                                            "body.txt": "Bonjour,\n\n{{ prenom }}\n"})
    with pytest.raises(TemplateError) as raised:
        _render(tmp_path, HELENE, "c")
    assert str(folder / "body.txt") in raised.value.message
    assert "line 3" in raised.value.message
    assert "'prenom' is undefined" in raised.value.message
    assert raised.value.exit_code == 1


def test_an_undefined_attribute_is_an_error_too(tmp_path: Path) -> None:
    write_campaign(tmp_path, "c", {"subject.txt": "S\n",
                                   "body.txt": "{{ subscriber.attributes.ville }}\n"})
    with pytest.raises(TemplateError, match=r"body.txt, line 1: undefined variable: .*ville"):
        _render(tmp_path, HELENE, "c")


def test_an_error_in_the_shared_layout_names_the_layout(templates: Path) -> None:
    layout = templates / "_layout" / "layout.txt"
    layout.write_text(layout.read_text(encoding="utf-8") + "{{ oops }}\n", encoding="utf-8")
    with pytest.raises(TemplateError) as raised:
        _render(templates)
    assert str(layout) in raised.value.message
    assert "'oops' is undefined" in raised.value.message


def test_a_syntax_error_is_reported_when_the_campaign_is_loaded(tmp_path: Path) -> None:
    folder = write_campaign(tmp_path, "c", {"subject.txt": "S\n",
                                            "body.txt": "a\n{% if x %}\nno end\n"})
    campaign = load_campaign(_settings(tmp_path), "c")
    with pytest.raises(TemplateError) as raised:
        Renderer(campaign)
    assert raised.value.message.startswith(f"{folder / 'body.txt'}, line 3: syntax error")


def test_a_syntax_error_in_the_shared_layout_is_reported_when_loading(templates: Path) -> None:
    layout = templates / "_layout" / "layout.html"
    layout.write_text("<p>{% if %}</p>\n", encoding="utf-8")
    campaign = load_campaign(_settings(templates), "closure-notice")
    with pytest.raises(TemplateError) as raised:
        Renderer(campaign)
    assert raised.value.message.startswith(f"{layout}, line 1: syntax error")


def test_the_sandbox_refuses_python_internals(tmp_path: Path) -> None:
    write_campaign(tmp_path, "c", {
        "subject.txt": "S\n",
        "body.txt": "{{ subscriber.__class__.__mro__[1].__subclasses__() }}\n",
    })
    with pytest.raises(TemplateError, match=r"body\.txt, line 1: "):
        _render(tmp_path, HELENE, "c")


def test_a_template_that_raises_names_the_line(tmp_path: Path) -> None:
    write_campaign(tmp_path, "c", {"subject.txt": "S\n", "body.txt": "ok\n{{ 1 / 0 }}\n"})
    with pytest.raises(TemplateError, match=r"body.txt, line 2: ZeroDivisionError"):
        _render(tmp_path, HELENE, "c")


def test_an_empty_subject_is_an_error(tmp_path: Path) -> None:
    write_campaign(tmp_path, "c", {"subject.txt": "{{ subscriber.first_name }}\n",
                                   "body.txt": "x\n"})
    with pytest.raises(TemplateError, match=r"subject renders empty for a@x\.fr"):
        _render(tmp_path, Recipient(id=1, email="a@x.fr", address="a@x.fr"), "c")


# --- campaign.toml ------------------------------------------------------------------------


def test_the_closure_notice_metadata(templates: Path) -> None:
    campaign = load_campaign(_settings(templates), "closure-notice")
    assert str(campaign.sender) == "Cime <contact@cime.example.org>"
    assert campaign.reply_to is not None
    assert campaign.list_id == "Lettre d’information du Cime <lettre.cime.example.org>"
    assert campaign.unsubscribe_url == "https://cime.example.org/desabonnement/{token}"
    assert campaign.unsubscribe_mailto == "desabonnement@cime.example.org"
    assert campaign.has_html
    assert len(campaign.digest) == 64


def test_settings_override_the_campaign(templates: Path) -> None:
    campaign = load_campaign(
        _settings(templates, sender="Bureau <bureau@asso.fr>",
                  unsubscribe_url="https://asso.fr/u/{token}",
                  unsubscribe_mailto="mailto:stop@asso.fr"),
        "closure-notice",
    )
    assert campaign.sender.addr_spec == "bureau@asso.fr"
    assert campaign.sender_domain == "asso.fr"
    assert campaign.unsubscribe_url == "https://asso.fr/u/{token}"
    assert campaign.unsubscribe_mailto == "stop@asso.fr"


def test_the_digest_changes_with_any_template(templates: Path) -> None:
    before = load_campaign(_settings(templates), "closure-notice").digest
    (templates / "_layout" / "greeting.txt").write_text("{# changed #}\n", encoding="utf-8")
    assert load_campaign(_settings(templates), "closure-notice").digest != before


def test_an_unknown_campaign_lists_the_known_ones(templates: Path) -> None:
    with pytest.raises(NotFoundError) as raised:
        load_campaign(_settings(templates), "closure-notic")
    assert raised.value.hint is not None
    assert "closure-notice" in raised.value.hint
    assert "_layout" not in raised.value.hint


@pytest.mark.parametrize(
    ("toml", "error", "match"),
    [
        ("from = [", ConfigError, "invalid TOML"),
        ('from = "A <a@x.fr>"\ncolour = 1\n', ConfigError, "unknown key 'colour'"),
        ('from = "A <nobody>"\n', ConfigError, "from"),
        ('reply_to = "x"\n', ConfigError, "no sender"),
        ('from = "A <a@x.fr>"\nlist_id = "no angle brackets"\n', ConfigError, "list_id"),
        ('from = "A <a@x.fr>"\n[unsubscribe]\nurl = "http://x.fr/{token}"\n', ConfigError,
         "must start with https"),
        ('from = "A <a@x.fr>"\n[unsubscribe]\nurl = "https://x.fr/u"\n', ConfigError,
         "must contain {token}"),
        ('from = "A <a@x.fr>"\n[unsubscribe]\nmailto = "not an address"\n', ConfigError,
         "mailto"),
        ('from = "A <a@x.fr>"\n[unsubscribe]\nlink = "x"\n', ConfigError, "unknown key 'link'"),
    ],
)
def test_bad_metadata_is_an_error_naming_the_file(
    tmp_path: Path, toml: str, error: type[Exception], match: str
) -> None:
    folder = write_campaign(tmp_path, "c", {"campaign.toml": toml, "subject.txt": "S\n",
                                            "body.txt": "x\n"})
    with pytest.raises(error, match=match) as raised:
        load_campaign(_settings(tmp_path), "c")
    assert str(folder / "campaign.toml") in str(raised.value)


def test_a_line_break_in_mailer_from_is_refused(templates: Path) -> None:
    with pytest.raises(ConfigError, match="MAILER_FROM: line breaks"):
        load_campaign(_settings(templates, sender="A <a@x.fr>\r\nBcc: b@y.fr"), "closure-notice")


def test_a_missing_template_file_is_named(tmp_path: Path) -> None:
    folder = write_campaign(tmp_path, "c", {"subject.txt": "S\n"})
    with pytest.raises(InputError, match=r"body\.txt: missing"):
        load_campaign(_settings(tmp_path), "c")
    assert folder.is_dir()


def test_a_campaign_name_cannot_walk_out_of_the_templates_folder(templates: Path) -> None:
    with pytest.raises(InputError, match="invalid campaign name"):
        load_campaign(_settings(templates), "../etc")


def test_http_is_allowed_on_the_loopback_for_tests(tmp_path: Path) -> None:
    write_campaign(tmp_path, "c", {
        "campaign.toml": 'from = "A <a@x.fr>"\n[unsubscribe]\n'
        'url = "http://127.0.0.1:8080/u/{token}"\n',
        "subject.txt": "S\n", "body.txt": "x\n",
    })
    assert load_campaign(_settings(tmp_path), "c").unsubscribe_url == (
        "http://127.0.0.1:8080/u/{token}"
    )
