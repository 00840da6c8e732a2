"""Benchmark `mailer bounces import` and `mailer purge --all-personal-data`: speed, memory, checks.

For each mailbox size N (default 2,000 and 20,000 messages) and each backend:

1. Set-up, not timed: N subscribers (`_measure.cached_csv`, no invalid rows) imported with
   `mailer import`, and the closure notice sent to every one of them with
   `mailer send closure-notice --outbox DIR` (the real send, written to files). With
   `--setup sql` (the default above 10,000: that send takes 50 s for 20,000), mailer queues
   everyone and sends one (`--limit 1`), and the others are marked sent with SQL copied from
   that one's row, with an attempts-log row each.
2. A mailbox of N bounce messages made from tests/fixtures/bounces, in a seeded mix: mostly
   permanent bounces (Postfix, Gmail, Exchange, qmail, Exim, French text...), delay notices,
   auto-replies, read receipts, and a few human replies and garbage. Each message is about
   its own delivery: the original's Message-ID becomes that delivery's (also inside base64
   parts), the failed address that subscriber's, and the bounce's own Message-ID gets a
   unique prefix; 5 % of the single-recipient bounces keep an unknown Message-ID, so that
   only the address leads to the subscriber. Written as an mbox, and as a Maildir of the same
   messages, by a child process (this one stays small: see make_mailboxes).
3. Measured child processes (os.wait4: wall, CPU, peak RSS): the ceilings, Python's mailbox
   module reading the mbox (best of 3), then reading and `mailer.bounces.dsn.parse` on each message
   (the read and parse times split inside); `mailer bounces import box.mbox --json`; on a
   copy of the database made before it, `mailer bounces import Maildir --json`; the mbox
   again (everything already imported); `mailer purge --all-personal-data --yes --json`.
   On PostgreSQL, the CPU of the server backends serving each run too.
4. Checks, or the benchmark stops: the JSON counts of every import (every bounce matched,
   every permanent one failing its delivery, nothing new the second time), the database's
   counts, what the purge removed, and (SQLite) that sample subscribers' addresses are in the
   file's bytes before the purge and in none of its files after.

    .venv/bin/python benchmarks/bounces_bench.py --snapshot       # 2,000 and 20,000, SQLite
    .venv/bin/python benchmarks/bounces_bench.py --quick          # 200 and 1,000: < 1 min
    .venv/bin/python benchmarks/bounces_bench.py --backends postgresql --parts import,again,purge
    .venv/bin/python benchmarks/bounces_bench.py --sizes 2000,100000 --parts import,maildir,purge
    .venv/bin/python benchmarks/bounces_bench.py --sizes 20000 --parts import --profile

Markdown goes to standard output, progress to standard error; files go to benchmarks/out/
(bounces-results-<time>.md and .json, profile-bounces-N.pstats).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import sqlite3
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _measure import (
    Measurement,
    cached_csv,
    clean_environment,
    parse_choices,
    parse_counts,
    run_measured,
)
from import_bench import PostgresDatabase, fingerprint, hot_spots, revision, take_snapshot

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(__file__).resolve().parent / "out"
FIXTURES = ROOT / "tests" / "fixtures" / "bounces"
CAMPAIGN = "closure-notice"
BACKENDS = ("sqlite", "postgresql")
SETUPS = ("auto", "send", "sql")
DEFAULT_SIZES = (2_000, 20_000)
QUICK_SIZES = (200, 1_000)
SEND_UP_TO = 10_000  # --setup auto: a real `mailer send --outbox` up to this many subscribers
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_SEED = 20240601
PARTS = ("ceilings", "import", "maildir", "again", "purge", "memory", "hostile")
MEMORY_SIZES = (100_000, 1_000_000)  # --parts memory: mailboxes read and parsed, no database
HOSTILE_IDS = 200_000  # Message-IDs in the hostile message's References
READ_RUNS = 3  # the read ceiling is cheap: best of 3
ADDRESS_ONLY = 0.05  # of single-recipient bounces, whose Message-ID matches no delivery
SAMPLE = 20  # subscribers whose addresses are looked for in the SQLite file's bytes


class BenchmarkError(RuntimeError):
    """A run that must not be reported: it failed or its counts are wrong."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the fixtures and the mix ---------------------------------------------------------------


@dataclass(frozen=True)
class Fixture:
    """One file of tests/fixtures/bounces, what `dsn.parse` finds in it (its README's table),
    and how often it comes in the generated mailbox (weights add up to 100)."""

    name: str
    weight: int
    kind: str  # bounce, ignored, unrecognised
    reports: tuple[tuple[str, bool], ...] = ()  # per recipient: severity, marks the subscriber
    original: int | None = None  # N of the original's Message-ID <3f9a1c2b7d4e.N@asso.fr>
    failed: str | None = None  # the failed address, replaced by the subscriber's


PERMANENT = (("permanent", True),)
TEMPORARY = (("temporary", False),)
MIX = (
    # permanent bounces: 67 %
    Fixture("rfc3464-postfix.eml", 18, "bounce", PERMANENT, 1001, "bob.martin@exemple.fr"),
    Fixture("gmail-dsn.eml", 14, "bounce", PERMANENT, 1003, "camille.durand@exemple.fr"),
    Fixture("exchange-ndr.eml", 12, "bounce", PERMANENT, 1005, "emma.garnier@outlook.fr"),
    Fixture("gmail-legacy.eml", 4, "bounce", PERMANENT, 1004, "david.lefebvre@exemple.fr"),
    Fixture("qmail.eml", 4, "bounce", PERMANENT, 1007, "helene.fournier@exemple.fr"),
    Fixture("latin1-fr.eml", 4, "bounce", PERMANENT, 1015, "lucie.gauthier@exemple.fr"),
    Fixture(
        "exchange-2003.eml", 3, "bounce", PERMANENT, 1006, "gerard.bonnet@mairie-exemple.fr"
    ),
    Fixture("verp.eml", 3, "bounce", PERMANENT, 1016, "karine.blanc@exemple.fr"),
    # 5.2.2 (mailbox full) fails the delivery but leaves the subscriber; the relay's second
    # mailbox (denis.roux, 4.4.1) is nobody on the list: matched by the Message-ID
    Fixture(
        "multi-recipient.eml", 3, "bounce", (("permanent", False), ("temporary", False)), 1002,
        "claire.petit@exemple.fr",
    ),
    Fixture("broken-mime.eml", 2, "bounce", PERMANENT, 1014, "jerome.mercier@exemple.fr"),
    # delay notices: 11 %
    Fixture("delayed.eml", 8, "bounce", TEMPORARY, 1008, "isabelle.girard@exemple.fr"),
    Fixture("latin1-fr-qp.eml", 3, "bounce", TEMPORARY, 1018, "olivier.perrin@exemple.fr"),
    # auto-replies, a read receipt, a success notice: 17 %
    Fixture("autoreply-fr.eml", 7, "ignored", original=1009),
    Fixture("autoreply-outlook.eml", 6, "ignored", original=1010),
    Fixture("read-receipt.eml", 2, "ignored", original=1011),
    Fixture("success-dsn.eml", 2, "ignored", original=1012),
    # not understood: 5 %
    Fixture("human-reply.eml", 2, "unrecognised", original=1013),
    Fixture("cp1252-nocharset.eml", 1, "unrecognised", original=1017),
    Fixture("garbage.bin", 1, "unrecognised"),
    Fixture("empty.eml", 1, "unrecognised"),
)
assert sum(f.weight for f in MIX) == 100

_ORIGINAL = b"@@ORIGINAL@@"  # placeholders in a prepared fixture
_FAILED = b"@@FAILED@@"
_OWN = b"@@OWN@@"
_BASE64_BLOCK = re.compile(rb"(?m)(?:^[A-Za-z0-9+/]+={0,2}(\r?\n)){2,}")
_OWN_ID = re.compile(rb"(?im)^(Message-ID:[ \t]*<)")
_FROM_LINE = re.compile(rb"(?m)^From ")
MBOX_FROM = b"From MAILER-DAEMON Sat Mar 30 10:15:05 2024\n"


@dataclass(frozen=True)
class Base64Part:
    """A base64 body that holds a value to replace: kept decoded, encoded again per message."""

    decoded: bytes
    newline: bytes


@dataclass(frozen=True)
class Template:
    fixture: Fixture
    parts: tuple[bytes | Base64Part, ...]


def prepare(fixture: Fixture) -> Template:
    """The fixture's bytes with placeholders for the original's Message-ID, the failed address
    and the bounce's own Message-ID (in its first header block only)."""
    raw = (FIXTURES / fixture.name).read_bytes()
    tokens = {}
    if fixture.original is not None:
        tokens[f"3f9a1c2b7d4e.{fixture.original}@asso.fr".encode()] = _ORIGINAL
    if fixture.failed is not None:
        tokens[fixture.failed.encode()] = _FAILED

    def substitute(data: bytes) -> bytes:
        for token, placeholder in tokens.items():
            data = data.replace(token, placeholder)
        return data

    end = re.search(rb"\r?\n\r?\n", raw)
    head_end = end.start() if end else len(raw)
    raw = _OWN_ID.sub(rb"\1" + _OWN, raw[:head_end], count=1) + raw[head_end:]
    parts: list[bytes | Base64Part] = []
    position = 0
    for block in _BASE64_BLOCK.finditer(raw):
        try:
            decoded = base64.b64decode(re.sub(rb"\s", b"", block.group(0)), validate=True)
        except (binascii.Error, ValueError):
            continue
        if not any(token in decoded for token in tokens):
            continue
        parts += [substitute(raw[position : block.start()]),
                  Base64Part(substitute(decoded), block.group(1))]
        position = block.end()
    parts.append(substitute(raw[position:]))
    template = Template(fixture, tuple(parts))
    check = b"".join(p.decoded if isinstance(p, Base64Part) else p for p in template.parts)
    for token, placeholder in tokens.items():
        if placeholder not in check:
            raise BenchmarkError(f"{fixture.name}: {token.decode()} not found")
    return template


def render_message(template: Template, number: int, message_id: str, address: str) -> bytes:
    """One bounce about the delivery `message_id` (`<...>`) to `address`."""
    values = {
        _ORIGINAL: message_id.strip("<>").encode("ascii"),
        _FAILED: address.encode("utf-8"),
        _OWN: f"b{number}.".encode("ascii"),
    }

    def fill(data: bytes) -> bytes:
        for placeholder, value in values.items():
            data = data.replace(placeholder, value)
        return data

    out: list[bytes] = []
    for part in template.parts:
        if isinstance(part, Base64Part):
            encoded = base64.encodebytes(fill(part.decoded))
            out.append(encoded.replace(b"\n", part.newline) if part.newline != b"\n" else encoded)
        else:
            out.append(fill(part))
    return b"".join(out)


@dataclass
class Expected:
    """What `mailer bounces import` must report for a generated mailbox, the first time."""

    messages: int = 0
    bounces: int = 0
    permanent: int = 0
    temporary: int = 0
    ignored: int = 0
    unrecognised: int = 0
    deliveries_failed: int = 0
    subscribers_bounced: int = 0
    by_address: int = 0  # bounces whose Message-ID is unknown: matched by the address only
    mbox_bytes: int = 0
    fixtures: dict[str, int] = field(default_factory=dict)

    def add(self, fixture: Fixture) -> None:
        self.messages += 1
        self.fixtures[fixture.name] = self.fixtures.get(fixture.name, 0) + 1
        if fixture.kind == "ignored":
            self.ignored += 1
        elif fixture.kind == "unrecognised":
            self.unrecognised += 1
        for severity, _marks in fixture.reports:
            self.bounces += 1
            self.permanent += severity == "permanent"
            self.temporary += severity == "temporary"
        permanent = [marks for severity, marks in fixture.reports if severity == "permanent"]
        self.deliveries_failed += bool(permanent)  # each message is about its own delivery
        self.subscribers_bounced += any(permanent)


@dataclass(frozen=True)
class Delivered:
    """A delivery of the sent campaign, as the database holds it."""

    message_id: str
    address: str  # on the wire (A-label domain)
    forms: tuple[str, ...]  # every spelling the subscribers table holds: email, key, address


@dataclass
class Mailboxes:
    mbox: Path
    maildir: Path
    order: Path  # the fixture of each message, one name a line, in mailbox order
    expected: Expected
    bounced_sample: list[Delivered]  # subscribers the import marks bounced (a sample)
    other_sample: list[Delivered]  # and others


def write_mailboxes(
    folder: Path, deliveries: Sequence[Delivered], seed: int, *, maildir: bool
) -> Mailboxes:
    """N = len(deliveries) messages, one per delivery in a seeded order, as an mbox (and as a
    Maildir of the same bytes: file names sort in the mbox's order)."""
    rng = random.Random(seed)
    templates = [prepare(fixture) for fixture in MIX]
    weights = [fixture.weight for fixture in MIX]
    order = list(range(len(deliveries)))
    rng.shuffle(order)
    expected = Expected()
    bounced: list[Delivered] = []
    others: list[Delivered] = []
    mbox = folder / "bounces.mbox"
    box = folder / "Maildir"
    names = folder / "order.txt"
    if maildir:
        for sub in ("cur", "new", "tmp"):
            (box / sub).mkdir(parents=True, exist_ok=True)
    with mbox.open("wb") as out, names.open("w", encoding="ascii") as order_file:
        for number, index in enumerate(order, start=1):
            template = rng.choices(templates, weights)[0]
            fixture = template.fixture
            delivered = deliveries[index]
            message_id = delivered.message_id
            if (len(fixture.reports) == 1 and rng.random() < ADDRESS_ONLY
                    and fixture.name != "verp.eml"):
                # the returned original's Message-ID is not one of ours (an MTA that rewrote
                # or dropped it): only the failed address leads to the subscriber (not for
                # verp.eml, whose token is the fixture's: a token that does not verify makes
                # a report untrusted, issue 13)
                message_id = f"<3f9a1c2b7d4e.{fixture.original}@asso.fr>"
                expected.by_address += 1
            raw = render_message(template, number, message_id, delivered.address)
            expected.add(fixture)
            order_file.write(fixture.name + "\n")
            marks = any(s == "permanent" and m for s, m in template.fixture.reports)
            sample = bounced if marks else others
            if len(sample) < SAMPLE // 2 and rng.random() < 0.2:
                sample.append(delivered)
            body = _FROM_LINE.sub(b">From ", raw)  # never needed by the fixtures (README)
            if body and not body.endswith(b"\n"):
                body += b"\n"
            out.write(MBOX_FROM + body + b"\n")
            if maildir:
                (box / "new" / f"{1732600000 + number}.M{number:07d}P4242.bench").write_bytes(raw)
    expected.mbox_bytes = mbox.stat().st_size
    if len(bounced) + len(others) < min(SAMPLE, len(deliveries)) // 2:
        raise BenchmarkError("too few sample subscribers; use a larger size")
    return Mailboxes(mbox, box, names, expected, bounced, others)


MAKE_MAILBOXES = "--make-mailboxes"  # the child-process mode of this script (see make_mailboxes)


def make_mailboxes(
    options: Options, database: Database, folder: Path, *, maildir: bool
) -> Mailboxes:
    """write_mailboxes in a child process: the deliveries (tens of MiB for 100,000) never
    enter this process, whose peak RSS every later child would inherit as its own floor
    (Linux: a child's ru_maxrss starts at its parent's peak at fork)."""
    request = {"database": database.spec(), "folder": str(folder), "seed": options.seed,
               "maildir": maildir}
    argv = [str(options.python), str(Path(__file__).resolve()), MAKE_MAILBOXES,
            json.dumps(request)]
    measured, _ = measure(options, None, argv, folder, "mailboxes", python_env(options))
    data = json_output(measured, "the mailbox writer")

    def samples(rows: list[list[Any]]) -> list[Delivered]:
        return [Delivered(m, a, tuple(forms)) for m, a, forms in rows]

    return Mailboxes(
        Path(data["mbox"]), Path(data["maildir"]), Path(data["order"]),
        Expected(**data["expected"]), samples(data["bounced"]), samples(data["others"]),
    )


def make_mailboxes_child(request_text: str) -> int:
    request = json.loads(request_text)
    spec = request["database"]
    database: Database = (
        SqliteFile(Path(spec["path"])) if spec["backend"] == "sqlite"
        else PostgresSchema(spec["base_url"], spec["schema"], create=False)
    )
    boxes = write_mailboxes(
        Path(request["folder"]), delivered(database), request["seed"], maildir=request["maildir"]
    )
    print(json.dumps({
        "mbox": str(boxes.mbox), "maildir": str(boxes.maildir), "order": str(boxes.order),
        "expected": asdict(boxes.expected),
        "bounced": [[d.message_id, d.address, d.forms] for d in boxes.bounced_sample],
        "others": [[d.message_id, d.address, d.forms] for d in boxes.other_sample],
    }))
    return 0


# --- databases --------------------------------------------------------------------------------


class Database:
    """A database under test: its URL for mailer, and plain SQL for the benchmark's own
    set-up and checks (never timed)."""

    backend: str
    url: str

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        raise NotImplementedError

    def size_bytes(self) -> int:
        raise NotImplementedError

    def spec(self) -> dict[str, str]:
        """How a child process reaches this database (make_mailboxes)."""
        raise NotImplementedError

    @contextmanager
    def monitor(self) -> Iterator[Any]:
        yield None

    def drop(self) -> None:
        raise NotImplementedError

    def count(self, table: str, where: str = "") -> int:
        ((number,),) = self.query(f"SELECT count(*) FROM {table} {where}")
        return int(number)


class SqliteFile(Database):
    backend = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"

    def spec(self) -> dict[str, str]:
        return {"backend": self.backend, "path": str(self.path)}

    def files(self) -> list[Path]:
        return [p for p in (Path(f"{self.path}{s}") for s in ("", "-wal", "-shm")) if p.exists()]

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with closing(sqlite3.connect(self.path)) as connection:
            return connection.execute(sql, tuple(params)).fetchall()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        with closing(sqlite3.connect(self.path)) as connection, connection:
            return connection.execute(sql, tuple(params)).rowcount

    def checkpoint(self) -> None:
        """Everything into the main file, the WAL emptied: the file can be copied alone."""
        with closing(sqlite3.connect(self.path)) as connection:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def copy(self, path: Path) -> SqliteFile:
        self.checkpoint()
        shutil.copyfile(self.path, path)
        return SqliteFile(path)

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files())

    def contains(self, needles: Sequence[bytes], chunk: int = 1 << 20) -> set[bytes]:
        """Which of `needles` occur in the bytes of the database's files (main, WAL, SHM).
        Read by chunks that overlap by the longest needle: this process stays small."""
        found: set[bytes] = set()
        overlap = max(map(len, needles), default=1) - 1
        for path in self.files():
            tail = b""
            with path.open("rb") as handle:
                while block := handle.read(chunk):
                    data = tail + block
                    found |= {needle for needle in needles if needle in data}
                    tail = data[-overlap:] if overlap else b""
        return found

    def drop(self) -> None:
        for path in self.files():
            path.unlink(missing_ok=True)


class PostgresSchema(Database):
    """A fresh schema (import_bench.PostgresDatabase), dropped afterwards."""

    backend = "postgresql"

    def __init__(self, base_url: str, schema: str, *, create: bool = True) -> None:
        import psycopg

        # create=False: a child process reaching the schema its parent made
        self._database = PostgresDatabase(base_url, schema) if create else None
        self.url = self._database.url if self._database else ""
        self.schema = schema
        self._base_url = base_url
        self._conninfo = re.sub(r"^postgresql\+\w+://", "postgresql://", base_url)
        self._connect = psycopg.connect

    def spec(self) -> dict[str, str]:
        return {"backend": self.backend, "base_url": self._base_url, "schema": self.schema}

    def _connection(self) -> Any:
        return self._connect(self._conninfo, options=f"-csearch_path={self.schema}")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._connection() as connection:
            return list(connection.execute(sql.replace("?", "%s"), tuple(params)).fetchall())

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self._connection() as connection:
            return int(connection.execute(sql.replace("?", "%s"), tuple(params)).rowcount)

    def size_bytes(self) -> int:
        ((total,),) = self.query(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ?"
            " AND c.relkind = 'r'",
            (self.schema,),
        )
        return int(total)

    @contextmanager
    def monitor(self) -> Iterator[Any]:
        monitor = self._database.server_cpu() if self._database else None
        with monitor or nullcontext() as server:
            yield server

    def drop(self) -> None:
        if self._database:
            self._database.drop()


# --- measured runs ----------------------------------------------------------------------------


@dataclass
class Run:
    backend: str
    size: int  # the mailbox's messages (= subscribers = deliveries)
    label: str  # read, parse, import, again, maildir, purge, fixed (see LABELS)
    wall_s: float
    cpu_s: float
    max_rss_mib: float
    server_cpu_s: float | None
    others_cores: float
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.size / self.wall_s if self.wall_s else 0.0

    @property
    def cpu_us(self) -> float:
        """CPU of the process (and of the PostgreSQL backends serving it) per message."""
        return 1e6 * (self.cpu_s + (self.server_cpu_s or 0.0)) / self.size if self.size else 0.0


SIZE_LABELS = ("read", "parse", "import", "maildir", "again", "purge")
LABELS = {
    "read": "ceiling: stdlib `mailbox` reads the mbox",
    "parse": "ceiling: stdlib `mailbox` + `dsn.parse`",
    "import": "`mailer bounces import` mbox",
    "maildir": "`mailer bounces import` Maildir",
    "again": "the same mbox again (all already imported)",
    "stdlib-toc": "stdlib `mailbox.mbox`: len() and every message read",
    "stream-read": "mailer's reader + digest, every message",
    "stream-parse": "mailer's reader + digest + `dsn.parse`, every message",
    "purge": "`mailer purge --all-personal-data --yes`",
}

# The ceilings, in a child process: Python's mailbox module reading every message of the mbox
# (as mailer does: factory=None, get_bytes), and with "parse" also mailer.bounces.dsn.parse on each,
# the two timed apart. Prints JSON.
CEILING_CODE = """\
import json, mailbox, sys, time
from collections import Counter
parse = None
if sys.argv[2] == "parse":
    from mailer.bounces.dsn import parse
read_s = parse_s = 0.0
kinds, severities, fixture_us, fixture_n = Counter(), Counter(), Counter(), Counter()
names = open(sys.argv[3], encoding="ascii")
started = time.perf_counter()
box = mailbox.mbox(sys.argv[1], factory=None, create=False)
total = len(box)
read_s += time.perf_counter() - started
for key in box.iterkeys():
    t0 = time.perf_counter()
    raw = box.get_bytes(key)
    t1 = time.perf_counter()
    read_s += t1 - t0
    if parse is not None:
        report = parse(raw)
        t2 = time.perf_counter()
        parse_s += t2 - t1
        name = next(names).strip()
        fixture_us[name] += (t2 - t1) * 1e6
        fixture_n[name] += 1
        kinds[report.kind] += 1
        severities.update(r.severity for r in report.recipients)
print(json.dumps({"messages": total, "read_s": read_s, "parse_s": parse_s,
                  "kinds": kinds, "severities": severities,
                  "per_fixture_us": {k: fixture_us[k] / n for k, n in fixture_n.items()}}))
"""


def measure(
    options: Options,
    database: Database | None,
    argv: Sequence[str],
    folder: Path,
    label: str,
    env: dict[str, str],
) -> tuple[Measurement, float | None]:
    """Run one child to completion, measured; its server CPU on PostgreSQL. A failure stops."""
    with database.monitor() if database else nullcontext() as server:
        measured = run_measured(
            argv, cwd=folder, env=env, stdout_path=folder / f"{label}.out",
            stderr_path=folder / f"{label}.err",
        )
    if measured.returncode != 0:
        raise BenchmarkError(
            f"{' '.join(argv)} exited {measured.returncode}:\n{measured.stderr_tail()}"
        )
    return measured, (server.seconds if server is not None else None)


def to_run(
    backend: str, size: int, label: str, measured: Measurement, server_cpu: float | None,
    **details: Any,
) -> Run:
    others = measured.machine_busy_s - measured.cpu_s - (server_cpu or 0.0)
    return Run(
        backend, size, label, measured.wall_s, measured.cpu_s, measured.max_rss_mib, server_cpu,
        max(0.0, others / measured.wall_s) if measured.wall_s else 0.0, dict(details),
    )


def mailer_env(options: Options, database: Database) -> dict[str, str]:
    extra = {"MAILER_DATABASE_URL": database.url, "MAILER_TEMPLATES_DIR": str(ROOT / "templates")}
    if options.snapshot is not None:
        extra["PYTHONPATH"] = str(options.snapshot)
    return clean_environment(extra)


def python_env(options: Options) -> dict[str, str]:
    extra = {"PYTHONPATH": str(options.snapshot)} if options.snapshot is not None else {}
    return clean_environment(extra)


def json_output(measured: Measurement, what: str) -> dict[str, Any]:
    try:
        data = json.loads(measured.stdout())
    except ValueError as exc:
        raise BenchmarkError(f"{what} printed no JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BenchmarkError(f"{what} printed {type(data).__name__}, not a JSON object")
    return data


def compare(what: str, got: dict[str, Any], wanted: dict[str, Any]) -> None:
    wrong = {k: (got.get(k), v) for k, v in wanted.items() if got.get(k) != v}
    if wrong:
        details = ", ".join(f"{k}: got {g!r}, expected {w!r}" for k, (g, w) in wrong.items())
        raise BenchmarkError(f"wrong {what}: {details}")


# --- set-up -------------------------------------------------------------------------------------


def setup(options: Options, database: Database, size: int, folder: Path) -> dict[str, Any]:
    """N subscribers imported and the closure notice sent to all (not timed); how it went."""
    csv_path, generated = cached_csv(OUT / "data", size, seed=options.seed, error_percent=0)
    if generated.imported != size:
        raise BenchmarkError(f"the generated list has {generated.imported:,} valid rows")
    env = mailer_env(options, database)
    started = time.perf_counter()
    measured, _ = measure(
        options, None, [str(options.mailer), "import", str(csv_path), "--json"], folder,
        "setup-import", env,
    )
    compare("mailer import summary", json_output(measured, "mailer import"), {"imported": size})
    imported_s = time.perf_counter() - started
    mode = options.setup if options.setup != "auto" else (
        "send" if size <= SEND_UP_TO else "sql"
    )
    outbox = folder / "outbox"
    argv = [str(options.mailer), "send", CAMPAIGN, "--outbox", str(outbox), "--json"]
    if mode == "sql":
        argv[3:3] = ["--limit", "1"]
    measured, _ = measure(options, None, argv, folder, "setup-send", env)
    report = json_output(measured, "mailer send")
    sent = 1 if mode == "sql" else size
    compare("mailer send summary", report.get("run", {}), {"queued": size, "sent": sent})
    shutil.rmtree(outbox, ignore_errors=True)
    if mode == "sql":
        mark_sent(database, size)
    if database.count("deliveries", "WHERE state = 'sent'") != size:
        raise BenchmarkError("the campaign's deliveries are not all sent")
    return {"setup": mode, "import_s": imported_s, "send_s": measured.wall_s,
            "mark_s": time.perf_counter() - started - imported_s - measured.wall_s}


def mark_sent(database: Database, size: int) -> None:
    """--setup sql: the deliveries mailer queued but did not send become what sending them to
    the outbox would have made them, copied from the one it sent; an attempt logged for each."""
    rows = database.query(
        "SELECT id, attempts, first_attempt_at, sent_at, last_code, last_reply, updated_at"
        " FROM deliveries WHERE state = 'sent'"
    )
    if len(rows) != 1:
        raise BenchmarkError(f"--limit 1 sent {len(rows)} deliveries")
    (sent_id, attempts, first, sent_at, code, reply, updated) = rows[0]
    ((worker,),) = database.query("SELECT worker FROM attempts WHERE delivery_id = ?", (sent_id,))
    changed = database.execute(
        "UPDATE deliveries SET state = 'sent', attempts = ?, first_attempt_at = ?, sent_at = ?,"
        " last_code = ?, last_reply = ?, updated_at = ?, lease_owner = NULL,"
        " lease_expires_at = NULL, next_attempt_at = NULL WHERE state = 'pending'",
        (attempts, first, sent_at, code, reply, updated),
    )
    logged = database.execute(
        "INSERT INTO attempts (delivery_id, at, worker, outcome, code, reply)"
        " SELECT id, sent_at, ?, 'sent', last_code, last_reply FROM deliveries"
        " WHERE id <> ?",
        (worker, sent_id),
    )
    if changed != size - 1 or logged != size - 1:
        raise BenchmarkError(f"marked {changed} sent and logged {logged}, not {size - 1:,}")


def delivered(database: Database) -> list[Delivered]:
    rows = database.query(
        "SELECT d.message_id, s.address, s.email, s.email_key FROM deliveries d"
        " JOIN subscribers s ON s.id = d.subscriber_id ORDER BY d.id"
    )
    return [Delivered(m, a, tuple(dict.fromkeys((a, e, k)))) for m, a, e, k in rows]


# --- the runs of one size -----------------------------------------------------------------------


def check_import(
    summary: dict[str, Any], expected: Expected, *, again: bool, source: str
) -> None:
    """Refuse an import whose summary is not what the mailbox must give."""
    if again:  # known by their bytes, not parsed; only the ones not understood are read again
        compare(f"bounces import summary ({source})", summary, {
            "messages": expected.messages,
            "known": expected.messages - expected.unrecognised,
            "unrecognised": expected.unrecognised,
            "bounces": 0,
            "ignored": 0,
            "already_imported": expected.bounces,
            "deliveries_failed": 0,
            "subscribers_bounced": 0,
            "skipped": 0,
        })
        return
    compare(f"bounces import summary ({source})", summary, {
        "known": 0,
        "skipped": 0,
        "messages": expected.messages,
        "bounces": expected.bounces,
        "permanent": expected.permanent,
        "temporary": expected.temporary,
        "matched": expected.bounces,  # every bounce is about a delivery of the campaign
        "unmatched": 0,
        "ignored": expected.ignored,
        "unrecognised": expected.unrecognised,
        "deliveries_failed": 0 if again else expected.deliveries_failed,
        "subscribers_bounced": 0 if again else expected.subscribers_bounced,
        "already_imported": expected.bounces if again else 0,
    })


def check_database(database: Database, expected: Expected, size: int) -> None:
    compare(f"database after the import ({database.backend})", {
        "bounces": database.count("bounces"),
        "failed deliveries": database.count("deliveries", "WHERE state = 'failed'"),
        "bounced subscribers": database.count("subscribers", "WHERE status = 'bounced'"),
        "subscribers": database.count("subscribers"),
    }, {
        "bounces": expected.bounces,
        "failed deliveries": expected.deliveries_failed,
        "bounced subscribers": expected.subscribers_bounced,
        "subscribers": size,
    })


def bounce_import(
    options: Options, database: Database, source: Path, folder: Path, label: str,
    expected: Expected, size: int,
) -> Run:
    log(f"  {label}: mailer bounces import {source.name} ...")
    argv = [str(options.mailer), "bounces", "import", str(source), "--json"]
    measured, server = measure(
        options, database, argv, folder, label, mailer_env(options, database)
    )
    summary = json_output(measured, "mailer bounces import")
    check_import(summary, expected, again=label == "again", source=label)
    check_database(database, expected, size)
    run = to_run(database.backend, size, label, measured, server)
    log(f"    {run.wall_s:.2f} s, {run.rate:,.0f} msgs/s, peak RSS {run.max_rss_mib:.1f} MiB")
    return run


def ceilings(options: Options, boxes: Mailboxes, folder: Path, size: int) -> list[Run]:
    runs = []
    for label, repeat in (("read", READ_RUNS), ("parse", 1)):
        best: Run | None = None
        for _ in range(repeat):
            log(f"  ceiling: {label} ...")
            argv = [str(options.python), "-c", CEILING_CODE, str(boxes.mbox), label,
                    str(boxes.order)]
            measured, _ = measure(options, None, argv, folder, f"ceiling-{label}",
                                  python_env(options))
            data = json_output(measured, f"the {label} ceiling")
            if data["messages"] != size:
                raise BenchmarkError(f"{label} ceiling read {data['messages']} messages")
            run = to_run("python", size, label, measured, None, read_s=data["read_s"],
                         parse_s=data["parse_s"])
            if label == "parse":
                compare("the parse ceiling's counts", {
                    "kinds": dict(data["kinds"]), "severities": dict(data["severities"])
                }, {
                    "kinds": {k: v for k, v in (
                        ("bounce", boxes.expected.messages - boxes.expected.ignored
                         - boxes.expected.unrecognised),
                        ("ignored", boxes.expected.ignored),
                        ("unrecognised", boxes.expected.unrecognised)) if v},
                    "severities": {k: v for k, v in (
                        ("permanent", boxes.expected.permanent),
                        ("temporary", boxes.expected.temporary)) if v},
                })
                run.details["per_fixture_us"] = data["per_fixture_us"]
            if best is None or run.wall_s < best.wall_s:
                best = run
        assert best is not None
        log(f"    {best.wall_s:.2f} s, {best.rate:,.0f} msgs/s")
        runs.append(best)
    return runs


def purge(
    options: Options, database: Database, folder: Path, boxes: Mailboxes, size: int
) -> Run:
    samples = boxes.bounced_sample + boxes.other_sample
    needles = sorted({form.encode() for d in samples for form in d.forms})
    before_bytes = database.size_bytes()
    if isinstance(database, SqliteFile):
        found = database.contains(needles)
        missing = [d for d in samples if not any(f.encode() in found for f in d.forms)]
        if missing:  # the check below would prove nothing
            raise BenchmarkError(f"{len(missing)} sample addresses not in the file before purge")
    log("  purge: mailer purge --all-personal-data --yes ...")
    argv = [str(options.mailer), "purge", "--all-personal-data", "--yes", "--json"]
    measured, server = measure(options, database, argv, folder, "purge",
                               mailer_env(options, database))
    report = json_output(measured, "mailer purge")
    compare("purge summary", report.get("removed", {}), {
        "campaigns": 1, "deliveries": size, "attempts": size,
        "bounces": boxes.expected.bounces, "subscribers": size,
        "suppressions": boxes.expected.subscribers_bounced,
    })
    compare("database after the purge", {
        t: database.count(t) for t in ("subscribers", "deliveries", "attempts", "bounces")
    } | {"suppressions": database.count("suppressions")}, {
        "subscribers": 0, "deliveries": 0, "attempts": 0, "bounces": 0,
        "suppressions": boxes.expected.subscribers_bounced,
    })
    details: dict[str, Any] = {"before_bytes": before_bytes, "after_bytes": database.size_bytes()}
    if isinstance(database, SqliteFile):
        left = database.contains(needles)
        if left:
            raise BenchmarkError(
                f"{len(left)} of {len(needles)} address spellings still readable in"
                f" {database.path} after the purge, e.g. {sorted(left)[0]!r}"
            )
        details |= {"addresses": len(samples), "spellings": len(needles), "found_after": 0,
                    "files_after": [p.name for p in database.files()]}
    run = to_run(database.backend, size, "purge", measured, server, **details)
    log(f"    {run.wall_s:.2f} s, peak RSS {run.max_rss_mib:.1f} MiB,"
        f" {before_bytes / 2**20:.1f} -> {details['after_bytes'] / 2**20:.1f} MiB")
    return run


_counter = 0


@contextmanager
def fresh_database(options: Options, backend: str, folder: Path) -> Iterator[Database]:
    global _counter
    _counter += 1
    database: Database
    if backend == "sqlite":
        database = SqliteFile(folder / "mailer.db")
    else:
        database = PostgresSchema(
            options.postgres_url, f"mailer_bounces_bench_{os.getpid()}_{_counter}"
        )
    try:
        yield database
    finally:
        database.drop()


def bench_size(options: Options, backend: str, size: int) -> tuple[list[Run], dict[str, Any]]:
    """Every run for one backend and one size; what the set-up and the mailbox were."""
    folder = OUT / "runs" / f"bounces-{backend}-{size}-{os.getpid()}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    runs: list[Run] = []
    try:
        with fresh_database(options, backend, folder) as database:
            log(f"{backend}, {size:,} messages: set-up (not timed)")
            info = setup(options, database, size, folder)
            if options.analyze:  # planner statistics, as autovacuum would gather them
                for table in ("subscribers", "deliveries", "attempts", "bounces"):
                    database.execute(f"ANALYZE {table}")  # this schema's tables only
                info["analyze"] = True
            started = time.perf_counter()
            boxes = make_mailboxes(options, database, folder,
                                   maildir=backend == "sqlite" and "maildir" in options.parts)
            info |= {"mailbox_s": time.perf_counter() - started, "expected": boxes.expected}
            log(f"  set-up: {info['setup']}, import {info['import_s']:.1f} s,"
                f" send {info['send_s']:.1f} s; mailbox {info['mailbox_s']:.1f} s,"
                f" {boxes.expected.mbox_bytes / 2**20:.1f} MiB")
            parts = options.parts
            copy = None
            if isinstance(database, SqliteFile):
                if "maildir" in parts or size == min(options.sizes):
                    copy = database.copy(folder / "maildir.db")
                if options.profile and size == max(options.sizes):
                    info["profile"] = profile(options, database, boxes, folder)
            if "ceilings" in parts and backend == options.backends[0]:  # the same messages
                runs += ceilings(options, boxes, folder, size)
            if copy is not None and size == min(options.sizes):
                runs.append(fixed_cost(options, copy, folder, size))
            if "import" in parts:
                runs.append(bounce_import(options, database, boxes.mbox, folder, "import",
                                          boxes.expected, size))
            if copy is not None and "maildir" in parts:  # next to the mbox's, to compare
                runs.append(bounce_import(options, copy, boxes.maildir, folder, "maildir",
                                          boxes.expected, size))
            if copy is not None:
                copy.drop()
            if "again" in parts:
                runs.append(bounce_import(options, database, boxes.mbox, folder, "again",
                                          boxes.expected, size))
            if "purge" in parts:
                runs.append(purge(options, database, folder, boxes, size))
    finally:
        if not options.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return runs, info


def fixed_cost(options: Options, database: SqliteFile, folder: Path, size: int) -> Run:
    """An empty mbox: start-up, schema check, nothing to read (on a copy: changes nothing)."""
    empty = folder / "empty.mbox"
    empty.write_bytes(b"")
    spare = database.copy(folder / "fixed.db")
    try:
        log("  fixed cost: mailer bounces import of an empty mbox ...")
        argv = [str(options.mailer), "bounces", "import", str(empty), "--json"]
        measured, _ = measure(options, spare, argv, folder, "fixed", mailer_env(options, spare))
        compare("empty import", json_output(measured, "mailer bounces import"), {"messages": 0})
    finally:
        spare.drop()
    return to_run("sqlite", 0, "fixed", measured, None, subscribers=size)


def profile(options: Options, database: SqliteFile, boxes: Mailboxes, folder: Path) -> str:
    """cProfile one mbox import on a copy of the database; its hot spots as markdown."""
    spare = database.copy(folder / "profile.db")
    stats = OUT / f"profile-bounces-{boxes.expected.messages}.pstats"
    log(f"  profiling one import -> {stats}")
    argv = [str(options.python), "-m", "cProfile", "-o", str(stats), "-m", "mailer", "bounces",
            "import", str(boxes.mbox), "--json"]
    try:
        measured, _ = measure(options, spare, argv, folder, "profile", mailer_env(options, spare))
        check_import(json_output(measured, "profiled import"), boxes.expected, again=False,
                     source="profile")
    finally:
        spare.drop()
    return (f"### Profile: one {boxes.expected.messages:,}-message mbox import on SQLite under"
            f" cProfile ({measured.wall_s:.1f} s wall with the profiler on)\n\n"
            + hot_spots(stats, options.profile_top))


# --- bounded cost: memory against the mailbox's size, the hostile message (issue 13) ----------

# Every message of an mbox through mailer's one-pass reader and the digest a second import
# looks up, and with "parse" `dsn.parse` too: the import's per-message work without the
# database, whose memory must not grow with the mailbox. Prints JSON.
STREAM_CODE = """\
import json, sys, time
from mailer.bounces.dsn import parse
from mailer.bounces.intake import digest
from mailer.bounces.mailboxes import open_mailbox
from mailer.core.config import Settings
kinds = {}
started = time.perf_counter()
with open_mailbox(sys.argv[1], Settings()) as box:
    total = box.total
    for item in box:
        digest(item.raw)
        kind = parse(item.raw).kind if sys.argv[2] == "parse" else "read"
        kinds[kind] = kinds.get(kind, 0) + 1
print(json.dumps({"messages": sum(kinds.values()), "total": total, "kinds": kinds,
                  "seconds": time.perf_counter() - started}))
"""

# One mbox imported in-process, timed from the mailbox's opening to the summary (start-up and
# the schema check are not the message's cost). Prints JSON.
HOSTILE_CODE = """\
import json, sys, time
from mailer.bounces.mailboxes import open_mailbox
from mailer.bounces.run import import_bounces
from mailer.core.config import Settings
from mailer.store.engine import ensure_schema, open_engine
engine = open_engine(sys.argv[1])
ensure_schema(engine)
started = time.perf_counter()
with open_mailbox(sys.argv[2], Settings()) as box:
    summary = import_bounces(engine, box, source=sys.argv[2])
seconds = time.perf_counter() - started
engine.dispose()
print(json.dumps({"seconds": seconds, "summary": summary.to_json()}))
"""


def write_plain_mbox(path: Path, size: int, seed: int) -> Expected:
    """`size` messages in the benchmark's mix about made-up deliveries (no database needed),
    streamed to disk: this process holds one message at a time."""
    rng = random.Random(seed)
    templates = [prepare(fixture) for fixture in MIX]
    weights = [fixture.weight for fixture in MIX]
    expected = Expected()
    partial = path.with_suffix(".partial")
    with partial.open("wb") as out:
        for number in range(1, size + 1):
            template = rng.choices(templates, weights)[0]
            raw = render_message(template, number, f"<bench.{number}@asso.fr>",
                                 f"abonne.{number}@exemple.fr")
            expected.add(template.fixture)
            body = _FROM_LINE.sub(b">From ", raw)
            if body and not body.endswith(b"\n"):
                body += b"\n"
            out.write(MBOX_FROM + body + b"\n")
    partial.rename(path)
    expected.mbox_bytes = path.stat().st_size
    return expected


def plain_mbox(options: Options, size: int) -> tuple[Path, Expected]:
    """The cached mbox of `size` messages (benchmarks/out/data), made when missing."""
    path = OUT / "data" / f"bounces-plain-{size}-{options.seed}.mbox"
    counts = path.with_suffix(".json")
    if path.exists() and counts.exists():
        return path, Expected(**json.loads(counts.read_text(encoding="utf-8")))
    path.parent.mkdir(parents=True, exist_ok=True)
    log(f"  writing {path.name} ({size:,} messages) ...")
    expected = write_plain_mbox(path, size, options.seed)
    counts.write_text(json.dumps(asdict(expected)), encoding="utf-8")
    return path, expected


def memory_runs(options: Options) -> list[Run]:
    """Peak RSS of reading (stdlib, then mailer's reader) and of reading + parsing, by size."""
    folder = OUT / "runs" / f"bounces-memory-{os.getpid()}"
    folder.mkdir(parents=True, exist_ok=True)
    runs: list[Run] = []
    try:
        for size in options.memory_sizes:
            mbox, expected = plain_mbox(options, size)
            log(f"memory, {size:,} messages ({expected.mbox_bytes / 2**20:,.0f} MiB mbox)")
            argvs = {
                "stdlib-toc": [str(options.python), "-c", CEILING_CODE, str(mbox), "read",
                               os.devnull],
                "stream-read": [str(options.python), "-c", STREAM_CODE, str(mbox), "read"],
                "stream-parse": [str(options.python), "-c", STREAM_CODE, str(mbox), "parse"],
            }
            for label, argv in argvs.items():
                log(f"  {LABELS[label]} ...")
                measured, _ = measure(options, None, argv, folder, f"{label}-{size}",
                                      python_env(options))
                data = json_output(measured, label)
                if data["messages"] != size:
                    raise BenchmarkError(f"{label} read {data['messages']:,} of {size:,}")
                if label == "stream-parse":
                    compare(f"{label} kinds", data["kinds"], {k: v for k, v in (
                        ("bounce", expected.messages - expected.ignored - expected.unrecognised),
                        ("ignored", expected.ignored),
                        ("unrecognised", expected.unrecognised)) if v})
                run = to_run("python", size, label, measured, None,
                             mbox_bytes=expected.mbox_bytes)
                log(f"    {run.wall_s:.1f} s, peak RSS {run.max_rss_mib:.1f} MiB")
                runs.append(run)
    finally:
        if not options.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return runs


def hostile_message(ids: int, *, compact: bool) -> bytes:
    """A bounce naming `ids` Message-IDs in References: compact ones (`<123@x>`, 2.0 MB in
    all: under the 2 MiB a message may have, so parsed) or real-looking ones (9 MB: skipped)."""
    refs = " ".join(
        f"<{n}@x>" if compact else f"<20261203.{n:06d}.{n * 7919 % 99991:05d}@mail.exemple.org>"
        for n in range(ids)
    )
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.exemple.fr>\n"
        "To: asso@asso.fr\nSubject: Undelivered Mail Returned to Sender\n"
        f"Message-ID: <hostile-{int(compact)}@mx.exemple.fr>\nReferences: {refs}\n\n"
        "This is the mail system at host mx.exemple.fr.\n\n"
        "<stranger@ailleurs.fr>: host mx.ailleurs.fr said: 550 5.1.1 User unknown\n"
    ).encode()


def hostile_runs(options: Options) -> list[Run]:
    """The hostile message alone, then within a batch of 99 ordinary bounces, on each backend
    (a fresh database): its import time, and the batch's bounces all recorded."""
    folder = OUT / "runs" / f"bounces-hostile-{os.getpid()}"
    folder.mkdir(parents=True, exist_ok=True)
    template = prepare(MIX[0])  # rfc3464-postfix: one permanent report each
    runs: list[Run] = []
    try:
        for compact in (True, False):
            hostile = hostile_message(HOSTILE_IDS, compact=compact)
            alone, batch = folder / f"alone-{compact}.mbox", folder / f"batch-{compact}.mbox"
            for path, others in ((alone, 0), (batch, 99)):
                with path.open("wb") as out:
                    messages = [render_message(template, n, f"<other.{n}@asso.fr>",
                                               f"autre.{n}@exemple.fr") for n in range(others)]
                    messages.insert(others // 2, hostile)
                    for raw in messages:
                        out.write(MBOX_FROM + _FROM_LINE.sub(b">From ", raw) + b"\n")
            for backend in options.backends:
                for path, others in ((alone, 0), (batch, 99)):
                    with fresh_database(options, backend, folder) as database:
                        label = f"hostile-{'compact' if compact else 'real'}-{others}"
                        argv = [str(options.python), "-c", HOSTILE_CODE, database.url, str(path)]
                        measured, server = measure(options, database, argv, folder, label,
                                                   python_env(options))
                        data = json_output(measured, label)
                        summary = data["summary"]
                        compare(f"{label} summary ({backend})", summary, {
                            "messages": others + 1,
                            "skipped": 0 if compact else 1,
                            "bounces": others + (1 if compact else 0),
                        })
                        if database.count("bounces") != summary["bounces"]:
                            raise BenchmarkError(f"{label}: the batch's bounces were not all"
                                                 " recorded")
                        run = to_run(backend, others + 1, "hostile", measured, server,
                                     compact=compact, others=others, seconds=data["seconds"],
                                     bytes=len(hostile))
                        log(f"  {backend} {label}: {data['seconds']:.3f} s")
                        runs.append(run)
    finally:
        if not options.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return runs


# --- report -------------------------------------------------------------------------------------


def mib(value: float) -> str:
    return f"{value:.1f}"


def render(
    runs: list[Run], infos: dict[tuple[str, int], dict[str, Any]], options: Options,
    started: datetime, source: tuple[str, str, str], elapsed_s: float,
) -> str:
    commit, at_start, at_end = source
    changed = (f" **mailer/ changed during the run ({at_start} -> {at_end}): results mix"
               " versions.**" if at_start != at_end else "")
    fixed = next((r for r in runs if r.label == "fixed"), None)
    lines = [
        f"## mailer bounces import and purge benchmark — {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {os.cpu_count()} cores (nproc {len(os.sched_getaffinity(0))}),"
        f" {platform.platform()}; Python {platform.python_version()}; SQLite"
        f" {sqlite3.sqlite_version}; mailer at {commit} (sources {at_start}"
        f"{', run from a frozen copy' if options.snapshot else ''});{changed}"
        f" whole run {elapsed_s / 60:.1f} min.",
        "",
        "| backend | messages | run | seconds | msgs/s | msgs/s after start-up | CPU µs/msg |"
        " peak RSS MiB | others' load |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        if run.label not in SIZE_LABELS:
            continue
        steady = (f"{run.size / (run.wall_s - fixed.wall_s):,.0f}"
                  if fixed and run.label in ("import", "again", "maildir")
                  and run.wall_s > fixed.wall_s else "")
        per = "per subscriber" if run.label == "purge" else ""
        lines.append(
            f"| {run.backend} | {run.size:,} | {LABELS[run.label]} | {run.wall_s:.2f} |"
            f" {run.rate:,.0f}{' subs/s' if per else ''} | {steady} | {run.cpu_us:,.0f} |"
            f" {mib(run.max_rss_mib)} | {run.others_cores:.2f} |"
        )
    if fixed:
        lines += ["", f"Fixed cost (start-up and schema check: an empty mbox on the"
                  f" {fixed.details['subscribers']:,}-subscriber database): {fixed.wall_s:.2f} s,"
                  f" {mib(fixed.max_rss_mib)} MiB."]
    start_us = fixed.wall_s if fixed else 0.0
    lines += ["", "Where the time goes, per message (wall µs). Read and parse: the parse ceiling,"
              " timed apart inside it; start-up: the fixed cost spread over the messages;"
              " match + record: what is left of the mbox import.", "",
              "| backend | messages | read (stdlib mailbox) | dsn.parse | start-up |"
              " match + record | import mbox | parse share | Maildir | again |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    by = {(r.backend, r.size, r.label): r for r in runs}
    for backend in options.backends:
        for size in options.sizes:
            imp = by.get((backend, size, "import"))
            ceiling = by.get(("python", size, "parse"))
            if imp is None or ceiling is None:
                continue
            read_us = 1e6 * ceiling.details["read_s"] / size
            parse_us = 1e6 * ceiling.details["parse_s"] / size
            fixed_us = 1e6 * start_us / size
            import_us = 1e6 * imp.wall_s / size
            again = by.get((backend, size, "again"))
            maildir = by.get((backend, size, "maildir"))
            lines.append(
                f"| {backend} | {size:,} | {read_us:,.0f} | {parse_us:,.0f} | {fixed_us:,.0f} |"
                f" {import_us - read_us - parse_us - fixed_us:,.0f} | {import_us:,.0f} |"
                f" {100 * parse_us / import_us:.0f} % |"
                f" {f'{1e6 * maildir.wall_s / size:,.0f}' if maildir else '—'} |"
                f" {f'{1e6 * again.wall_s / size:,.0f}' if again else '—'} |"
            )
    if len(options.sizes) > 1 and any(r.label in SIZE_LABELS for r in runs):
        small, large = options.sizes[0], options.sizes[-1]
        lines += ["", f"Peak RSS, {large:,} messages against {small:,} (flat memory: ~1.0):", "",
                  "| backend | run | RSS MiB small → large | ratio |", "|---|---|---|---:|"]
        for backend in [*options.backends, "python"]:
            for label in SIZE_LABELS:
                a, b = by.get((backend, small, label)), by.get((backend, large, label))
                if a and b:
                    lines.append(f"| {backend} | {LABELS[label]} | {mib(a.max_rss_mib)} →"
                                 f" {mib(b.max_rss_mib)} | {b.max_rss_mib / a.max_rss_mib:.2f} |")
    lines += cost_tables(runs, options)
    if any(run.label == "purge" for run in runs):
        lines += ["", "Purge (after the imports):", "",
                  "| backend | subscribers | seconds | µs per subscriber | peak RSS MiB |"
                  " database MiB before → after | sample addresses readable after |",
                  "|---|---:|---:|---:|---:|---|---|"]
    for run in runs:
        if run.label != "purge":
            continue
        readable = (f"0 of {run.details['addresses']} ({run.details['spellings']} spellings;"
                    f" all {run.details['addresses']} found before)"
                    if "addresses" in run.details else "— (not a file)")
        lines.append(
            f"| {run.backend} | {run.size:,} | {run.wall_s:.2f} |"
            f" {1e6 * run.wall_s / run.size:,.0f} |"
            f" {mib(run.max_rss_mib)} | {run.details['before_bytes'] / 2**20:.1f} →"
            f" {run.details['after_bytes'] / 2**20:.1f} | {readable} |"
        )
    parse_runs = [r for r in runs if r.label == "parse" and "per_fixture_us" in r.details]
    if parse_runs:
        largest = parse_runs[-1]
        lines += ["", f"`dsn.parse` per fixture ({largest.size:,} messages; mean µs):", "",
                  "| fixture | messages | µs |", "|---|---:|---:|"]
        info = infos.get((options.backends[0], largest.size), {})
        fixtures = info["expected"].fixtures if "expected" in info else {}
        for name, micros in sorted(largest.details["per_fixture_us"].items(),
                                   key=lambda item: -item[1]):
            lines.append(f"| `{name}` | {fixtures.get(name, 0):,} | {micros:,.0f} |")
    lines += ["", "Mailboxes and set-up:", ""] if infos else []
    for (backend, size), info in infos.items():
        e: Expected = info["expected"]
        lines.append(
            f"- {backend}, {size:,}: set-up `{info['setup']}`"
            f"{' then ANALYZE' if info.get('analyze') else ''} (import {info['import_s']:.1f} s,"
            f" send {info['send_s']:.1f} s); mbox {e.mbox_bytes / 2**20:.1f} MiB: {e.bounces:,}"
            f" bounce reports ({e.permanent:,} permanent, {e.temporary:,} temporary),"
            f" {e.ignored:,} ignored, {e.unrecognised:,} not understood"
            f" ({e.by_address:,} bounces with an unknown Message-ID, to match by address); expected"
            f" {e.deliveries_failed:,} deliveries failed and {e.subscribers_bounced:,}"
            " subscribers bounced. Every import's JSON, the database's counts and the purge"
            " matched these."
        )
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines += ["", f"The benchmark's own peak RSS was {own:.1f} MiB at the end. Linux starts a"
              " child's ru_maxrss at its parent's peak at fork: a child's peak RSS below that"
              " is not measured (the ceilings' own may be lower than shown)."]
    lines += ["", "CPU µs/msg: user + system time of the process (and, on PostgreSQL, of the"
              " server backends serving it) per message or subscriber. Others' load: CPU used"
              " meanwhile by every other process, in busy cores (the noise)."]
    for info in infos.values():
        if "profile" in info:
            lines += ["", info["profile"]]
    return "\n".join(lines) + "\n"


def cost_tables(runs: list[Run], options: Options) -> list[str]:
    """The second import against the first; memory against the mailbox's size; the hostile
    message."""
    lines: list[str] = []
    by = {(r.backend, r.size, r.label): r for r in runs}
    pairs = [(b, s, by[(b, s, "import")], by[(b, s, "again")]) for b in options.backends
             for s in options.sizes if (b, s, "import") in by and (b, s, "again") in by]
    if pairs:
        lines += ["", "Second import of the same mbox against the first (every message known:"
                  " not parsed again; wall seconds, start-up included):", "",
                  "| backend | messages | first s | second s | second µs/msg | faster |",
                  "|---|---:|---:|---:|---:|---:|"]
        for backend, size, first, again in pairs:
            lines.append(f"| {backend} | {size:,} | {first.wall_s:.2f} | {again.wall_s:.2f} |"
                         f" {1e6 * again.wall_s / size:,.0f} |"
                         f" **{first.wall_s / again.wall_s:.1f}×** |")
    memory = [r for r in runs if r.label in ("stdlib-toc", "stream-read", "stream-parse")]
    if memory:
        sizes = sorted({r.size for r in memory})
        lines += ["", "Peak RSS (MiB) against the mailbox's size, no database (`--parts memory`):"
                  " each message read, its digest taken, and parsed; seconds in brackets:", "",
                  "| run | " + " | ".join(f"{s:,} messages" for s in sizes)
                  + " | ratio largest / smallest |",
                  "|---|" + "---:|" * (len(sizes) + 1)]
        for label in ("stdlib-toc", "stream-read", "stream-parse"):
            row = [by.get(("python", s, label)) for s in sizes]
            if not all(row):
                continue
            cells = [f"{r.max_rss_mib:.1f} ({r.wall_s:,.0f} s)" for r in row if r]
            first_rss, last_rss = row[0].max_rss_mib, row[-1].max_rss_mib  # type: ignore[union-attr]
            lines.append(f"| {LABELS[label]} | " + " | ".join(cells)
                         + f" | **{last_rss / first_rss:.2f}** |")
        mboxes = {r.size: r.details["mbox_bytes"] for r in memory}
        lines += ["", "The mboxes: " + ", ".join(
            f"{s:,} messages {mboxes[s] / 2**20:,.0f} MiB" for s in sizes) + "."]
    hostile = [r for r in runs if r.label == "hostile"]
    if hostile:
        lines += ["", f"The hostile message ({HOSTILE_IDS:,} Message-IDs in References; fresh"
                  " database; seconds from opening the mailbox to the summary, in-process):", "",
                  "| backend | Message-IDs | size MB | messages in the mbox | what happened |"
                  " seconds | peak RSS MiB |", "|---|---|---:|---:|---|---:|---:|"]
        for run in hostile:
            compact, others = run.details["compact"], run.details["others"]
            what = "parsed, 20 IDs looked up" if compact else "skipped unread (over 2 MiB)"
            if others:
                what += f"; the {others} others recorded"
            lines.append(
                f"| {run.backend} | {'compact `<123@x>`' if compact else 'real-looking'} |"
                f" {run.details['bytes'] / 1e6:.1f} | {run.size} | {what} |"
                f" **{run.details['seconds']:.3f}** | {run.max_rss_mib:.1f} |"
            )
    return lines


# --- command line ---------------------------------------------------------------------------


@dataclass
class Options:
    sizes: list[int]
    backends: list[str]
    setup: str
    seed: int
    postgres_url: str
    mailer: Path
    python: Path
    keep: bool
    snapshot: Path | None
    profile: bool
    profile_top: int
    parts: list[str]
    analyze: bool
    memory_sizes: list[int]


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=parse_counts,
                        help="comma-separated mailbox sizes = subscribers (default 2000,20000)")
    parser.add_argument("--quick", action="store_true", help="sizes 500,2000: under a minute")
    parser.add_argument(
        "--backends", type=lambda text: parse_choices(text, BACKENDS, "backend(s)"),
        default=["sqlite"], help="comma-separated: sqlite,postgresql (default: sqlite)",
    )
    parser.add_argument(
        "--setup", choices=SETUPS, default="auto",
        help="send: `mailer send --outbox`; sql: `--limit 1`, then the rest marked sent with"
        f" SQL; auto (default): send up to {SEND_UP_TO:,} subscribers, sql above",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="generator seed")
    parser.add_argument(
        "--postgres-url", default=os.environ.get("MAILER_BENCH_POSTGRES_URL", DEFAULT_POSTGRES),
        help="database for the PostgreSQL runs (a schema per run is created and dropped)",
    )
    parser.add_argument("--mailer", type=Path, default=ROOT / ".venv" / "bin" / "mailer")
    parser.add_argument("--python", type=Path, default=ROOT / ".venv" / "bin" / "python")
    parser.add_argument("--keep", action="store_true", help="keep the run folders")
    parser.add_argument("--snapshot", action="store_true",
                        help="run a copy of mailer/ taken at start (as import_bench.py)")
    parser.add_argument("--profile", action="store_true",
                        help="also cProfile one SQLite mbox import at the largest size")
    parser.add_argument("--profile-top", type=int, default=25, help="functions shown")
    parser.add_argument(
        "--analyze", action="store_true",
        help="run ANALYZE after the set-up (the PostgreSQL test server has autovacuum off)",
    )
    parser.add_argument(
        "--parts", type=lambda text: parse_choices(text, PARTS, "part(s)"),
        default=[p for p in PARTS if p != "memory"],
        help=f"which runs (default: all but memory): {','.join(PARTS)}; again and purge need"
        " import",
    )
    parser.add_argument(
        "--memory-sizes", type=parse_counts, default=list(MEMORY_SIZES),
        help="mailbox sizes of --parts memory (default 100000,1000000)",
    )
    args = parser.parse_args(argv)
    sizes = args.sizes if args.sizes is not None else list(
        QUICK_SIZES if args.quick else DEFAULT_SIZES
    )
    if not sizes:
        parser.error("no sizes")
    if "import" not in args.parts and {"again", "purge"} & set(args.parts):
        parser.error("--parts: again and purge come after import")
    return Options(
        sizes=sizes, backends=args.backends, setup=args.setup, seed=args.seed,
        postgres_url=args.postgres_url, mailer=args.mailer, python=args.python, keep=args.keep,
        snapshot=take_snapshot() if args.snapshot else None, profile=args.profile,
        profile_top=args.profile_top, parts=args.parts, analyze=args.analyze,
        memory_sizes=args.memory_sizes,
    )


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # run the `finally` blocks: drop schemas, remove folders


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments[:1] == [MAKE_MAILBOXES]:
        return make_mailboxes_child(arguments[1])
    options = parse_args(arguments)
    signal.signal(signal.SIGTERM, _terminate)
    started = datetime.now(UTC)
    clock = time.perf_counter()
    commit = revision()
    at_start = fingerprint(options.snapshot / "mailer") if options.snapshot else fingerprint()
    runs: list[Run] = []
    infos: dict[tuple[str, int], dict[str, Any]] = {}
    try:
        if set(options.parts) & {"ceilings", "import", "maildir", "again", "purge"}:
            for backend in options.backends:
                for size in options.sizes:
                    size_runs, infos[(backend, size)] = bench_size(options, backend, size)
                    runs += size_runs
        if "memory" in options.parts:  # first: a child's peak RSS starts at this process's
            runs += memory_runs(options)
        if "hostile" in options.parts:
            runs += hostile_runs(options)
    except BenchmarkError as exc:
        log(f"benchmark failed: {exc}")
        return 1
    source = (commit, at_start, at_start if options.snapshot else fingerprint())
    markdown = render(runs, infos, options, started, source, time.perf_counter() - clock)
    sys.stdout.write(markdown)
    stamp = f"{started:%Y%m%dT%H%M%S}"
    OUT.mkdir(exist_ok=True)
    (OUT / f"bounces-results-{stamp}.md").write_text(markdown, encoding="utf-8")
    raw = {
        "started": started.isoformat(),
        "options": {k: str(v) for k, v in asdict(options).items()},
        "runs": [asdict(r) for r in runs],
        "setups": {f"{b}-{s}": {k: (asdict(v) if isinstance(v, Expected) else v)
                                for k, v in info.items() if k != "profile"}
                   for (b, s), info in infos.items()},
    }
    (OUT / f"bounces-results-{stamp}.json").write_text(json.dumps(raw, indent=2, default=str),
                                                       encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
