"""The SQLAlchemy 2.0 tables: subscribers, campaigns, deliveries, attempts and bookkeeping.

Portable across SQLite and PostgreSQL: no server-side defaults that read a clock (time is
passed in by the caller), JSON for free-form attributes, CHECK constraints for states.
The schema itself is created and evolved by the Alembic migrations in mailer/migrations.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from mailer.core.states import DeliveryState, SubscriberStatus

# SQLite only aliases the rowid for exactly "INTEGER PRIMARY KEY".
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; pass an aware UTC time")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _in(column: str, values: Any) -> str:
    return f"{column} IN ({', '.join(repr(str(v)) for v in values)})"


class Base(DeclarativeBase):
    pass


class Meta(Base):
    """Key/value facts about this database (the generated token secret, ...)."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Subscriber(Base):
    __tablename__ = "subscribers"
    __table_args__ = (
        CheckConstraint(_in("status", SubscriberStatus), name="ck_subscriber_status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email: Mapped[str] = mapped_column(String(320))  # as the person wrote it, for display
    email_key: Mapped[str] = mapped_column(String(320), unique=True)  # dedupe key
    address: Mapped[str] = mapped_column(String(320))  # what goes on the wire (A-label domain)
    smtputf8: Mapped[bool] = mapped_column(Boolean, default=False)
    first_name: Mapped[str | None] = mapped_column(String(200))
    last_name: Mapped[str | None] = mapped_column(String(200))
    civility: Mapped[str | None] = mapped_column(String(50))
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default=SubscriberStatus.ACTIVE, index=True)
    source: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Suppression(Base):
    """A keyed hash of an erased address: lets a later import refuse it without storing it."""

    __tablename__ = "suppressions"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    reason: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Campaign(Base):
    __tablename__ = "campaigns"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    template_hash: Mapped[str | None] = mapped_column(String(64))
    snapshot: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    sender: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Set by `mailer purge`: the deliveries are gone, these counts by state remain, and the
    # campaign can never be sent again (that would send everyone a second copy).
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    purged_counts: Mapped[dict[str, int] | None] = mapped_column(JSON)


class Delivery(Base):
    """One message of one campaign to one subscriber, and where it stands."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("campaign_id", "subscriber_id", name="uq_delivery_campaign_subscriber"),
        CheckConstraint(_in("state", DeliveryState), name="ck_delivery_state"),
        Index("ix_deliveries_due", "campaign_id", "state", "next_attempt_at"),
        Index("ix_deliveries_lease", "state", "lease_expires_at"),
        Index("ix_deliveries_subscriber", "subscriber_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(16), default=DeliveryState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    first_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    message_id: Mapped[str] = mapped_column(String(255), unique=True)
    last_code: Mapped[int | None] = mapped_column(Integer)
    last_reply: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Attempt(Base):
    """Append-only log: one row per try of a delivery. Answers "did Alice get it, and when?"."""

    __tablename__ = "attempts"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("deliveries.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    worker: Mapped[str] = mapped_column(String(100))
    outcome: Mapped[str] = mapped_column(String(16))
    code: Mapped[int | None] = mapped_column(Integer)
    reply: Mapped[str | None] = mapped_column(Text)
    relay: Mapped[str | None] = mapped_column(String(255))  # the relay's name; None: outbox


class RelayState(Base):
    """A relay's pause: after it refused for its budget, nothing is sent through it until
    `paused_until`; `strikes` counts the refusals since its last acceptance (the cool-down
    doubles with each)."""

    __tablename__ = "relays"
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    paused_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    strikes: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str | None] = mapped_column(Text)  # the relay's words
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RelaySlot(Base):
    """A block of `count` messages reserved in a relay's windows, used before `until`: a
    window counts every block whose `until` falls inside it."""

    __tablename__ = "relay_slots"
    __table_args__ = (Index("ix_relay_slots_relay_until", "relay", "until"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    relay: Mapped[str] = mapped_column(String(255))
    until: Mapped[datetime] = mapped_column(UTCDateTime)
    count: Mapped[int] = mapped_column(Integer)


class RelayWait(Base):
    """A stretch of time nothing could be sent through a relay (paused, or its window full):
    it does not count toward a delivery's give-up age."""

    __tablename__ = "relay_waits"
    __table_args__ = (Index("ix_relay_waits_ends_at", "ends_at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    relay: Mapped[str] = mapped_column(String(255))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    reason: Mapped[str] = mapped_column(String(16))  # "paused" or "window"


class Bounce(Base):
    """One recipient's report in one bounce message, as `mailer bounces import` found it.

    `key` identifies the report (the bounce message's fingerprint, the recipient, the status),
    so importing the same mailbox twice finds every report already here and changes nothing.
    A complaint (an abuse feedback report) is stored here too: severity permanent, reason
    "complaint".
    The diagnostic may name the address: `mailer purge` removes these rows with the deliveries.
    """

    __tablename__ = "bounces"
    __table_args__ = (
        CheckConstraint("severity IN ('permanent', 'temporary')", name="ck_bounce_severity"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    delivery_id: Mapped[int | None] = mapped_column(
        ForeignKey("deliveries.id", ondelete="CASCADE"), index=True
    )
    subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), index=True
    )
    severity: Mapped[str] = mapped_column(String(16))
    status: Mapped[str | None] = mapped_column(String(16))
    diagnostic: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(32))
    reported_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    imported_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    # Why (mailer.bounces.dsn.reasons: "mailbox unknown", "mailbox full", "complaint"...), and
    # what tied the report to its delivery: "verp", "message-id", "address", or "untrusted"
    # (recorded, changing nobody; no delivery or subscriber kept). None: imported before 0003.
    reason: Mapped[str | None] = mapped_column(String(32))
    trust: Mapped[str | None] = mapped_column(String(16))


class Purge(Base):
    """What each `mailer purge` removed (counts only; no personal data)."""

    __tablename__ = "purges"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    scope: Mapped[str] = mapped_column(String(255))
    campaigns: Mapped[int] = mapped_column(Integer, default=0)
    deliveries: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    bounces: Mapped[int] = mapped_column(Integer, default=0)
    subscribers: Mapped[int] = mapped_column(Integer, default=0)
    suppressions: Mapped[int] = mapped_column(Integer, default=0)


class ImportRun(Base):
    """What each `mailer import` did (counts only; no personal data)."""

    __tablename__ = "imports"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    source: Mapped[str] = mapped_column(String(255))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    rows: Mapped[int] = mapped_column(Integer, default=0)
    imported: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    unchanged: Mapped[int] = mapped_column(Integer, default=0)
    duplicates: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)


class MailboxFolder(Base):
    """How far `mailer bounces import` read an IMAP folder: the highest UID it recorded. UIDs
    name the same messages only while the folder keeps its UIDVALIDITY: under another one the
    folder is read again from the start."""

    __tablename__ = "mailbox_folders"
    __table_args__ = (UniqueConstraint("host", "account", "folder", name="uq_mailbox_folder"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    account: Mapped[str] = mapped_column(String(320))  # the IMAP user
    folder: Mapped[str] = mapped_column(String(1000))  # as the URL names it ("/" between levels)
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class MailboxMessage(Base):
    """A message `mailer bounces import` recorded, by the SHA-256 of its bytes (as an mbox, a
    Maildir and IMAP all give them): a later import by the same `reader` (mailer's version)
    skips it unparsed; another version reads it again, as it may understand it better.
    `reports`: how many bounce reports it held. No address can be read from a digest."""

    __tablename__ = "mailbox_messages"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    reader: Mapped[str] = mapped_column(String(32))
    reports: Mapped[int] = mapped_column(Integer)
    imported_at: Mapped[datetime] = mapped_column(UTCDateTime)
