"""The ways out of a run, in order: one SMTP pool per relay (mailer.toml's `[[relay]]` tables,
or the one relay of MAILER_SMTP_*), or the outbox folder. A relay whose settings are wrong
stops only itself while another can send; a relay paused after a refusal is skipped until its
pause ends, without a connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from mailer.core.budget import RelaySpec
from mailer.core.clock import Clock
from mailer.core.config import Settings, relay_settings, relay_specs
from mailer.core.delivery import Transport
from mailer.core.errors import ConfigError
from mailer.sending.options import ProgressFn, Tally
from mailer.sending.outbox import OutboxTransport
from mailer.sending.relay import require_relay
from mailer.store import pauses
from mailer.store.engine import read_transaction


@dataclass
class Route:
    """One way out: a relay (its spec; None for the outbox) and its transport, or the
    configuration error that keeps it from being used."""

    spec: RelaySpec | None
    transport: Transport | None
    error: ConfigError | None = None


def open_routes(settings: Settings, outbox: Path | None) -> list[Route]:
    """Every route, checked before anything is queued (no connection is opened)."""
    if outbox is not None:
        return [Route(None, OutboxTransport(outbox))]
    specs = relay_specs(settings)
    if not specs:
        require_relay(settings)  # the one "no relay" error
    # Imported here: commands that send nothing do not load aiosmtplib.
    from mailer.sending.smtp import SmtpPool

    routes: list[Route] = []
    for spec in specs:
        try:
            pool = SmtpPool(relay_settings(settings, spec), concurrency=spec.concurrency)
        except ConfigError as exc:
            if len(specs) == 1:
                raise
            routes.append(Route(spec, None, named(exc, spec)))
            continue
        routes.append(Route(spec, pool))
    return routes


def paused(engine: Engine, route: Route, clock: Clock) -> Tally | None:
    """A relay paused after a refusal: what the run says of it (it is not knocked on)."""
    if route.spec is None:
        return None
    with read_transaction(engine) as connection:
        pause = pauses.current(connection, route.spec.name, clock())
    if pause is None:
        return None
    return Tally(wait="paused", wait_until=pause.until.isoformat(), wait_relay=route.spec.name)


def adding(combined: Tally, progress: ProgressFn) -> ProgressFn:
    """Progress of one relay's dispatcher, drawn on top of the relays before it."""

    def report(tally: Tally) -> None:
        shown = Tally(total=combined.total, started=tally.started)
        shown.add(combined)
        shown.add(tally)
        progress(shown)

    return report


def named(error: ConfigError, spec: RelaySpec) -> ConfigError:
    """A relay's configuration error, naming the relay (and where its password is read)."""
    hint = error.hint
    if spec.password_env and spec.password is None:
        hint = f"set {spec.password_env} (the relay's password_env) in the environment"
    return ConfigError(f"relay {spec.name!r}: {error.message}", hint=hint)
