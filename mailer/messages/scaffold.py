"""`mailer campaign new NAME`: a campaign folder to start from, that previews and passes the
pre-flight as it is (the sender and links are placeholders on example.org, which the pre-flight
points out as warnings until they are edited).

The bodies extend the shared layout (`_layout/layout.txt`, `_layout/layout.html`): greeting,
signature, why the reader got the message and the unsubscribe link come from there. A
templates folder without `_layout/` gets the shipped one copied in.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from mailer.core.config import Settings
from mailer.core.errors import ConfigError, InputError
from mailer.messages.campaign import _NAME, HTML, METADATA, SUBJECT, TEXT

LAYOUT = "_layout"
_SHIPPED_LAYOUT = Path(__file__).resolve().parents[2] / "templates" / LAYOUT

CAMPAIGN_TOML = """\
# The campaign {name}: who sends it, and the values its templates use.
# Every key is explained here; the ones commented out are optional. Check any change with
#   mailer preview {name}          (one subscriber's message)
#   mailer preview {name} --check  (every active subscriber's, nothing sent)

# The sender (required; MAILER_FROM overrides it). Its domain also names the Message-ID.
from = "Association <contact@association.example.org>"
# Where replies go (optional).
# reply_to = "Le bureau <bureau@association.example.org>"
# The list's identity (RFC 2919, optional): a description and a dotted name on your domain.
# list_id = "Lettre de l’association <lettre.association.example.org>"

[unsubscribe]
# One-click unsubscribe (RFC 8058): `mailer serve` answers at this URL; {{token}} is each
# subscriber's token. MAILER_UNSUBSCRIBE_URL overrides it.
url = "https://association.example.org/desabonnement/{{token}}"
# And/or an address that receives unsubscribe requests. MAILER_UNSUBSCRIBE_MAILTO overrides it.
# mailto = "desabonnement@association.example.org"

[context]
# Variables for the templates: {{{{ list_name }}}}, {{{{ signature }}}}, and any you add.
# list_name ends "…est inscrite à <list_name>." at the foot of every message (required).
list_name = "la lettre d’information de l’association"
# The signature under the body (leave empty for none).
signature = "Le bureau de l’association"
# A link the body offers when set (leave empty to print no link).
link_url = ""
"""

SUBJECT_TXT = "Des nouvelles de l’association\n"

BODY_TXT = """\
{% extends "_layout/layout.txt" %}
{% block body %}
Écrivez ici le message, en texte brut : il doit se suffire à lui-même (certains lecteurs
n’affichent que lui).
{% if link_url %}

Pour en savoir plus : {{ link_url }}
{% endif %}
{% endblock %}
"""

BODY_HTML = """\
{% extends "_layout/layout.html" %}
{% block headline %}
<h1 style="font-size:22px;line-height:1.3;margin:0 0 20px;">{{ subject }}</h1>
{% endblock %}
{% block body %}
<p>Écrivez ici le message, en HTML : le même contenu que body.txt.</p>
{% if link_url %}
<p><a href="{{ link_url }}">Pour en savoir plus</a></p>
{% endif %}
{% endblock %}
"""


def new_campaign(settings: Settings, name: str) -> Path:
    """Create `<templates>/<name>/` (and `_layout/` if missing); the folder made."""
    if not _NAME.match(name):
        raise InputError(
            f"invalid campaign name {name!r}",
            hint="a campaign is a folder name of letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
        )
    templates_dir = settings.templates_dir
    folder = templates_dir / name
    if folder.exists():
        raise InputError(f"{folder.absolute()} already exists",
                         hint="choose another name, or edit that folder")
    try:
        if not (templates_dir / LAYOUT).is_dir():
            shutil.copytree(_SHIPPED_LAYOUT, templates_dir / LAYOUT)
        folder.mkdir(parents=True)
        for file, content in ((METADATA, CAMPAIGN_TOML.format(name=name)),
                              (SUBJECT, SUBJECT_TXT), (TEXT, BODY_TXT), (HTML, BODY_HTML)):
            (folder / file).write_text(content, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot create {folder.absolute()}: {exc.strerror or exc}",
            hint="MAILER_TEMPLATES_DIR names the templates folder",
        ) from exc
    return folder
