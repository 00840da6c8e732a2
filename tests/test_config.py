"""Settings precedence and validation: defaults < mailer.toml < environment < options."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailer.core.config import Rate, Settings, load_settings, parse_rate
from mailer.core.errors import ConfigError


def test_defaults_match_the_contract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={})
    assert settings.database_url == "sqlite:///subscribers.db"
    assert settings.templates_dir == Path("templates")
    assert settings.smtp_host is None
    assert settings.smtp_security == "starttls"
    assert (settings.retry_base_delay, settings.retry_max_delay, settings.retry_max_age) == (
        300,
        14400,
        345600,
    )
    assert settings.lease_seconds == 600
    assert settings.rate is None


def test_toml_then_environment_then_options_win_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mailer.toml").write_text(
        'smtp_host = "toml.example"\nsmtp_port = 2525\nrate = "300/min"\nconcurrency = 2\n'
    )
    settings = load_settings(environ={"MAILER_SMTP_HOST": "env.example", "MAILER_CONCURRENCY": "8"})
    assert settings.smtp_host == "env.example"  # environment beats the file
    assert settings.smtp_port == 2525  # the file beats the default
    assert settings.rate == Rate(300, 60)
    assert settings.with_overrides(concurrency=3, rate=None).concurrency == 3  # option beats env
    assert settings.with_overrides(concurrency=None).concurrency == 8


def test_smtp_table_in_toml_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "custom.toml"
    path.write_text('[smtp]\nhost = "relay.example"\nport = 465\nsecurity = "tls"\n')
    settings = load_settings(path, environ={})
    assert (settings.smtp_host, settings.smtp_port, settings.smtp_security) == (
        "relay.example",
        465,
        "tls",
    )


def test_mailer_config_variable_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere.toml"
    path.write_text('database_url = "sqlite:///other.db"\n')
    assert load_settings(environ={"MAILER_CONFIG": str(path)}).database_url == "sqlite:///other.db"


@pytest.mark.parametrize("key", ["smtp_password", "secret", "password"])
def test_a_secret_in_the_toml_file_is_refused(tmp_path: Path, key: str) -> None:
    path = tmp_path / "mailer.toml"
    path.write_text(f'{key} = "hunter2"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert key in caught.value.message
    assert "hunter2" not in caught.value.message
    assert caught.value.exit_code == 78


def test_password_comes_from_environment_or_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "password"
    secret_file.write_text("s3cret\n")
    assert load_settings(environ={"MAILER_SMTP_PASSWORD": "a"}).smtp_password == "a"
    settings = load_settings(environ={"MAILER_SMTP_PASSWORD_FILE": str(secret_file)})
    assert settings.smtp_password == "s3cret"
    assert "s3cret" not in repr(settings)


def test_unknown_key_in_toml_names_it(tmp_path: Path) -> None:
    path = tmp_path / "mailer.toml"
    path.write_text('smtp_hots = "typo"\n')
    with pytest.raises(ConfigError, match="smtp_hots"):
        load_settings(path, environ={})


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MAILER_SMTP_PORT", "smtp"),
        ("MAILER_SMTP_PORT", "70000"),
        ("MAILER_SMTP_SECURITY", "ssl"),
        ("MAILER_RATE", "fast"),
        ("MAILER_RATE", "0"),
        ("MAILER_CONCURRENCY", "0"),
        ("MAILER_RETRY_BASE_DELAY", "-1"),
    ],
)
def test_bad_environment_value_names_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={variable: value})
    assert variable in caught.value.message
    assert caught.value.exit_code == 78


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "mailer.toml"
    path.write_text("smtp_host = \n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings(path, environ={})


def test_missing_explicit_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml", environ={})


@pytest.mark.parametrize(
    ("text", "per_second"),
    [("20", 20.0), ("20/s", 20.0), ("300/min", 5.0), ("5000/h", 5000 / 3600), ("1.5", 1.5)],
)
def test_rates(text: str, per_second: float) -> None:
    assert parse_rate(text).per_second == pytest.approx(per_second)


def test_settings_repr_hides_secrets() -> None:
    settings = Settings(smtp_password="pw-value", secret="secret-value")
    assert "pw-value" not in repr(settings)
    assert "secret-value" not in repr(settings)


def test_imap_password_comes_from_environment_or_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "imap-password"
    secret_file.write_text("imap-s3cret\n")
    assert load_settings(environ={}).imap_password is None
    assert load_settings(environ={"MAILER_IMAP_PASSWORD": "a"}).imap_password == "a"
    settings = load_settings(environ={"MAILER_IMAP_PASSWORD_FILE": str(secret_file)})
    assert settings.imap_password == "imap-s3cret"
    assert "imap-s3cret" not in repr(settings)
    both = {"MAILER_IMAP_PASSWORD": "b", "MAILER_IMAP_PASSWORD_FILE": str(secret_file)}
    assert load_settings(environ=both).imap_password == "b"  # as for the SMTP password
    assert load_settings(environ={"MAILER_SMTP_PASSWORD": "smtp"}).imap_password is None


def test_unreadable_imap_password_file_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"MAILER_IMAP_PASSWORD_FILE": str(tmp_path / "missing")})
    assert "MAILER_IMAP_PASSWORD_FILE" in caught.value.message
    assert caught.value.exit_code == 78


@pytest.mark.parametrize(
    "line",
    ['imap_password = "hunter2"', 'imap_password_file = "hunter2"', '[imap]\npassword = "hunter2"'],
)
def test_an_imap_password_in_the_toml_file_is_refused(tmp_path: Path, line: str) -> None:
    path = tmp_path / "mailer.toml"
    path.write_text(line + "\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert "imap_password" in caught.value.message
    assert "hunter2" not in caught.value.message
    assert "MAILER_IMAP_PASSWORD" in (caught.value.hint or "")
    assert caught.value.exit_code == 78


def test_imap_ca_file_from_toml_then_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    path = tmp_path / "mailer.toml"
    assert load_settings(environ={}).imap_ca_file is None
    path.write_text('imap_ca_file = "~/ca.pem"\n')
    assert load_settings(path, environ={}).imap_ca_file == tmp_path / "ca.pem"
    path.write_text('[imap]\nca_file = "/etc/ssl/asso-ca.pem"\n')
    assert load_settings(path, environ={}).imap_ca_file == Path("/etc/ssl/asso-ca.pem")
    settings = load_settings(path, environ={"MAILER_IMAP_CA_FILE": "/srv/ca.pem"})
    assert settings.imap_ca_file == Path("/srv/ca.pem")
    assert settings.smtp_ca_file is None  # the two CA files are separate settings


def test_settings_repr_hides_the_imap_password() -> None:
    assert "imap-pw-value" not in repr(Settings(imap_password="imap-pw-value"))


def test_workers_default_to_the_usable_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset, a run may use one process per core it may run on, at most four; set, as set."""
    from mailer.core import config

    monkeypatch.setattr(config.os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3, 4, 5, 6, 7})
    assert config.worker_count(Settings()) == 4
    monkeypatch.setattr(config.os, "sched_getaffinity", lambda _pid: {3})
    assert config.worker_count(Settings()) == 1
    assert config.worker_count(load_settings(environ={"MAILER_WORKERS": "3"})) == 3
