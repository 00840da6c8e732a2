"""The unsubscribe link of a message mailer really sent, followed in a real headless Chromium.

`mailer send --outbox` writes the messages; the link is taken from one message's
List-Unsubscribe header; Chromium (Debian's /usr/bin/chromium, driven through
/usr/bin/chromedriver by selenium) opens it on the loopback, where `web.Server` (uvicorn, as
`mailer serve` runs it) answers. The page is checked as a person sees it, the button clicked,
and the database and the next `mailer retry` checked afterwards.

Without Chromium the tests are skipped, unless CI=true: then they fail.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest

from mailer import web
from mailer.core.config import Settings
from tests.conftest import REPO_TEMPLATES
from tests.test_web import deliveries, running, snapshot, statuses

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-quic",
]
IN_CI = os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}
EXAMPLE = Path(__file__).parent.parent / "examples" / "abonnes-excel.csv"
LIST_NAME = "Lettre d’information du Cime"  # closure-notice's List-Id description
PNG = b"\x89PNG\r\n\x1a\n"


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One headless Chromium for the module, phone-sized."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        _unavailable(f"{' and '.join(missing)} missing (apt-get install chromium "
                     "chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed (pip install -e '.[test]')")
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.set_page_load_timeout(30)
        driver.set_window_size(390, 844)  # a phone
        yield driver
    finally:
        driver.quit()


@dataclass
class Sent:
    settings: Settings  # what the server reads: the same database and templates as the CLI
    outbox: Path  # the closure notice, one .eml per subscriber
    later: Path  # the outbox of `rappel` and `relance`, the campaigns still in progress
    target: str  # pending in `rappel`, deferred in `relance`


@pytest.fixture
def sent(cli: Any, tmp_path: Path, database_url: str) -> Iterator[tuple[Sent, web.Server]]:
    """The example list imported and the closure notice sent with `mailer send --outbox`,
    its unsubscribe URL on the port the server listens on; two more campaigns queued."""
    sock = web.listen("127.0.0.1", 0)
    port = sock.getsockname()[1]
    templates = tmp_path / "templates"
    shutil.copytree(REPO_TEMPLATES, templates)
    toml = templates / "closure-notice" / "campaign.toml"
    text = toml.read_text(encoding="utf-8")
    public = 'url = "https://cime.example.org/desabonnement/{token}"'
    assert public in text
    toml.write_text(text.replace(
        public, f'url = "http://127.0.0.1:{port}/desabonnement/{{token}}"'), encoding="utf-8")
    for name in ("rappel", "relance"):
        shutil.copytree(templates / "closure-notice", templates / name)

    assert cli("import", str(EXAMPLE)).code == 0
    result = cli("send", "closure-notice", "--outbox", "out")
    assert result.code == 0, result.stderr
    for name in ("rappel", "relance"):
        result = cli("send", name, "--outbox", "later", "--limit", "1")
        assert result.code == 0, result.stderr
    settings = Settings(database_url=database_url, templates_dir=templates)
    states = deliveries(settings)
    target = sorted(email for (campaign, email), state in states.items()
                    if campaign == "rappel" and state == "pending"
                    and states[("relance", email)] == "pending"
                    and email.isascii() and email == email.lower())[0]  # as in To:
    _defer(settings, "relance", target)
    with running(settings, sock) as server:
        yield Sent(settings, tmp_path / "out", tmp_path / "later", target), server


def _defer(settings: Settings, campaign: str, email: str) -> None:
    """As after a 451: deferred, due again now."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import select, update

    from mailer import api
    from mailer.store.engine import write_transaction
    from mailer.store.models import Campaign, Delivery, Subscriber

    with api.open_database(settings) as engine, write_transaction(engine) as connection:
        connection.execute(
            update(Delivery)
            .where(
                Delivery.subscriber_id == select(Subscriber.id).where(Subscriber.email == email)
                .scalar_subquery(),
                Delivery.campaign_id == select(Campaign.id).where(Campaign.name == campaign)
                .scalar_subquery(),
            )
            .values(state="deferred", attempts=1, last_code=451,
                    next_attempt_at=datetime.now(UTC) - timedelta(minutes=1))
        )


def messages(outbox: Path) -> dict[str, EmailMessage]:
    """The outbox's messages by recipient address."""
    found: dict[str, EmailMessage] = {}
    for path in outbox.glob("*.eml"):
        message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
        assert isinstance(message, EmailMessage)
        found[message["To"].addresses[0].addr_spec] = message
    return found


def unsubscribe_link(message: EmailMessage) -> str:
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    links = re.findall(r"<([^>]+)>", str(message["List-Unsubscribe"]))
    assert links[0].startswith("http://127.0.0.1:")
    assert links[1].startswith("mailto:")
    return str(links[0])


def plain(text: str) -> str:
    """White space (the non-breaking ones inside « ») as single spaces."""
    return " ".join(text.split())


def csp_violations(driver: Any) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser")
            if "Content Security Policy" in entry["message"]]


def screenshot(driver: Any, path: Path) -> None:
    assert driver.save_screenshot(str(path))
    data = path.read_bytes()
    assert data.startswith(PNG)
    assert len(data) > 2000


def test_the_link_of_a_sent_message_unsubscribes_with_one_click_in_chromium(
    browser: Any, sent: tuple[Sent, web.Server], tmp_path: Path, cli: Any
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    world, _server = sent
    outbox = messages(world.outbox)
    assert len(outbox) == 7
    link = unsubscribe_link(outbox[world.target])
    assert "/desabonnement/" in link
    before = snapshot(world.settings)

    # The page, as the person sees it: nothing is changed by looking.
    browser.get_log("browser")  # start from an empty console
    browser.get(link)
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "fr"
    heading = plain(browser.find_element(By.TAG_NAME, "h1").text)
    assert heading == f"Se désinscrire de la lettre « {LIST_NAME} »"
    assert plain(browser.title) == heading
    page = browser.find_element(By.TAG_NAME, "body").text
    assert f"{world.target[0]}••••@exemple.fr" in page
    assert world.target not in page
    buttons = browser.find_elements(By.TAG_NAME, "button")
    assert [b.text for b in buttons] == ["Me désinscrire"]
    button = buttons[0]
    # The hashed inline style applies under the Content-Security-Policy, and fits a phone.
    assert button.value_of_css_property("background-color") == "rgba(166, 27, 27, 1)"
    assert browser.execute_script(
        "return document.documentElement.scrollWidth <= window.innerWidth") is True
    assert button.size["width"] > 250
    assert csp_violations(browser) == []
    screenshot(browser, tmp_path / "confirm.png")
    assert snapshot(world.settings) == before

    # One click.
    button.click()
    WebDriverWait(browser, 15).until(
        expected_conditions.text_to_be_present_in_element((By.TAG_NAME, "h1"),
                                                          "Vous êtes désinscrit·e"))
    assert browser.current_url == link
    assert f"{world.target[0]}••••@exemple.fr" in browser.find_element(By.TAG_NAME, "body").text
    assert browser.find_elements(By.TAG_NAME, "button") == []
    assert csp_violations(browser) == []
    screenshot(browser, tmp_path / "done.png")

    status_before, deliveries_before = before
    status_after, deliveries_after = snapshot(world.settings)
    assert status_after == {**status_before, world.target: "unsubscribed"}
    assert deliveries_before[("rappel", world.target)] == "pending"
    assert deliveries_before[("relance", world.target)] == "deferred"
    assert deliveries_after == {
        **deliveries_before,
        ("rappel", world.target): "skipped",
        ("relance", world.target): "skipped",
    }

    # Opening the link again says so, and changes nothing.
    browser.get(link)
    assert browser.find_element(By.TAG_NAME, "h1").text == "Vous êtes déjà désinscrit·e"
    assert browser.find_elements(By.TAG_NAME, "button") == []

    # A link with one character changed is refused, in French, and changes nothing.
    tampered = link[:-1] + ("A" if link[-1] != "A" else "B")
    browser.get(tampered)
    assert browser.find_element(By.TAG_NAME, "h1").text == "Lien de désinscription invalide"
    assert snapshot(world.settings) == (status_after, deliveries_after)

    # The next retry (cron) sends the other campaigns to everyone else, not to them.
    already = set(messages(world.later))
    result = cli("retry", "--outbox", str(world.later))
    assert result.code == 0, result.stderr
    later = messages(world.later)
    assert world.target not in later
    assert len(later) == 6  # everyone but the person who left
    assert set(later) > already
    final = deliveries(world.settings)
    assert final[("rappel", world.target)] == final[("relance", world.target)] == "skipped"
    assert {state for (campaign, email), state in final.items()
            if email != world.target} == {"sent"}
    assert statuses(world.settings)[world.target] == "unsubscribed"
