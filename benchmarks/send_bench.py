"""Benchmark `mailer send`: deliveries to smtp-sink on 127.0.0.1, end to end, against two others.

In one run, on the same generated French list (`_measure.cached_csv`, no invalid rows) and a
fresh Postfix smtp-sink per measured run (`tests.smtpsink.start_sink`):

(a) ceiling: a child process renders every subscriber's closure notice with mailer's own
    MessageFactory, keeps the bytes in memory, then blasts them with K aiosmtplib
    connections (each sends its share one transaction per recipient); only the blast is
    timed. No database, no bookkeeping: the fastest a Python client sends these messages.
(b) mailmerge (PyPI, its own venv in benchmarks/.venv-mailmerge): `mailmerge --no-dry-run
    --no-limit` on a subset, with a template made from the same closure notice. It opens one
    connection per message.
(c) mailer: `mailer import` (not timed), then `mailer send closure-notice --concurrency K
    --workers W --json` as a child process, for each W of --mailer-workers (default 1 and 2),
    each on a freshly imported list: wall time, CPU, peak RSS (os.wait4; the forked workers
    are reaped by it, so their CPU is included). The JSON must say every delivery was sent,
    the sink must have counted exactly that many messages, and its log (`-v`: the SMTP
    commands, not the data) one RCPT per subscriber. A send to one subscriber gives the fixed
    cost (start-up and set-up).
(d) memory: (c)'s peak RSS at 20,000 and 200,000 deliveries, W = 1 (the import is another
    process).
(e) PostgreSQL workers: W `mailer send` processes started at once on one fresh schema
    (W = 1, 2, 4); total throughput, and every address received exactly once (the sink
    dumps every envelope for this part and for mailmerge's).

    .venv/bin/python benchmarks/send_bench.py --snapshot           # everything, ~3.5 min
    .venv/bin/python benchmarks/send_bench.py --quick              # 2,000 deliveries, ~1 min
    .venv/bin/python benchmarks/send_bench.py --parts ceiling,mailmerge

Markdown goes to standard output, progress to standard error; files go to benchmarks/out/
(send-results-<time>.md and .json). Exit status 1 if any requested part failed or did not
check out (the others are still reported).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import re
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _measure import (
    Measurement,
    cached_csv,
    clean_environment,
    machine_busy_seconds,
    parse_choices,
    parse_counts,
)
from _measure import run_processes as measure_processes
from import_bench import PostgresDatabase, fingerprint, revision, take_snapshot

# The repository's root, for the test suite's smtp-sink helper (tests/smtpsink.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.smtpsink import Counters, Sink, SinkError, SinkMissing, start_sink

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(__file__).resolve().parent / "out"
CAMPAIGN = "closure-notice"
DEFAULT_COUNT = 20_000
DEFAULT_CONCURRENCY = 4
DEFAULT_MAILMERGE_COUNT = 2_000
DEFAULT_MEMORY_COUNTS = (20_000, 200_000)
DEFAULT_WORKERS = (1, 2, 4)
DEFAULT_MAILER_WORKERS = (1, 2)  # `mailer send --workers W` in part (c)
QUICK_COUNT, QUICK_MAILMERGE = 2_000, 300  # --quick
QUICK_MEMORY_COUNTS, QUICK_WORKERS = (2_000, 20_000), (1, 2)
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_SEED = 20240601  # import_bench's
PARTS = ("ceiling", "mailmerge", "mailer", "memory", "workers")
MAILMERGE_VENV = Path(__file__).resolve().parent / ".venv-mailmerge"
MAILMERGE_VERSION = "2.3.0"
CEILING_SECRET = "send-bench-ceiling"  # the ceiling's token key (mailer's is in its database)
# The counting sink of the ceiling and of mailer's SQLite runs also logs the SMTP commands
# (not the data: a few lines per message), to check one RCPT per subscriber; the same flags
# for both, so that the sink's share of the 2 cores is the same.
LOGGING_SINK = ("-v",)
_RCPT = re.compile(rb"RCPT TO:<([^>]*)>", re.IGNORECASE)
# Goals (from the issue): mailer >= 70 % of the ceiling, >= 3x mailmerge, flat memory.
GOAL_CEILING = 0.70
GOAL_MAILMERGE = 3.0
GOAL_MEMORY = 1.10  # peak RSS at the largest count / at the smallest


class BenchmarkError(RuntimeError):
    """A run that must not be reported: it failed or its counts are wrong."""


class SinkKilled(BenchmarkError):
    """smtp-sink died during the run (on a shared machine, something else killed it)."""


ATTEMPTS = 3  # a part whose sink was killed from outside is run again, from scratch


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- measured child processes ---------------------------------------------------------------


def run_processes(
    argvs: Sequence[Sequence[str]],
    *,
    cwd: Path,
    env: dict[str, str],
    folder: Path,
    label: str,
    timeout: float,
) -> list[Measurement]:
    """_measure.run_processes, with output files named after `label` in `folder`."""
    paths = [(folder / f"{label}-{n}.out", folder / f"{label}-{n}.err") for n in range(len(argvs))]
    try:
        return measure_processes(argvs, cwd=cwd, env=env, paths=paths, timeout=timeout)
    except TimeoutError as exc:
        raise BenchmarkError(f"{label}: {exc}") from exc


def run_one(
    argv: Sequence[str],
    *,
    folder: Path,
    env: dict[str, str],
    label: str,
    timeout: float,
    check: bool = True,
) -> Measurement:
    (measured,) = run_processes(
        [argv], cwd=folder, env=env, folder=folder, label=label, timeout=timeout
    )
    if check and measured.returncode != 0:
        raise BenchmarkError(
            f"{' '.join(argv)} exited {measured.returncode}:\n{measured.stderr_tail()}"
        )
    return measured


# --- results --------------------------------------------------------------------------------


@dataclass
class Run:
    """One measured send: the child process(es), the sink, the database server."""

    kind: str  # ceiling, mailmerge, mailer, workers
    label: str
    messages: int
    connections: int  # sessions the sink counted
    wall_s: float
    cpu_s: float  # the sending process(es), user + system
    max_rss_mib: float  # the largest peak RSS among them
    sink_cpu_s: float | None
    server_cpu_s: float | None  # PostgreSQL backends serving the run
    others_cores: float  # every other process on the machine meanwhile, in busy cores
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.messages / self.wall_s if self.wall_s else 0.0


def make_run(
    kind: str,
    label: str,
    messages: int,
    measured: Sequence[Measurement],
    sink: Sink,
    sink_cpu_before: float,
    *,
    wall_s: float | None = None,
    cpu_s: float | None = None,
    busy_s: float | None = None,
    server_cpu_s: float | None = None,
    details: dict[str, Any] | None = None,
) -> Run:
    """`wall_s`, `cpu_s`, `busy_s`: the measured part of the child(ren), when not all of it."""
    sink_cpu = sink.cpu_seconds()
    sink_used = None if sink_cpu is None else sink_cpu - sink_cpu_before
    wall = max(m.wall_s for m in measured) if wall_s is None else wall_s
    cpu = sum(m.cpu_s for m in measured) if cpu_s is None else cpu_s
    busy = measured[0].machine_busy_s if busy_s is None else busy_s
    others = busy - cpu - (sink_used or 0.0) - (server_cpu_s or 0.0)
    return Run(
        kind=kind,
        label=label,
        messages=messages,
        connections=settled_counters(sink).sessions,
        wall_s=wall,
        cpu_s=cpu,
        max_rss_mib=max(m.max_rss_mib for m in measured),
        sink_cpu_s=sink_used,
        server_cpu_s=server_cpu_s,
        others_cores=max(0.0, others / wall) if wall else 0.0,
        details=details or {},
    )


def settled_counters(sink: Sink) -> Counters:
    """The sink's counters once the last sessions' ends are recorded (QUIT, then close)."""
    previous = sink.counters()
    for _ in range(20):
        time.sleep(0.05)
        current = sink.counters()
        if current == previous:
            return current
        previous = current
    return previous


def check_sink(sink: Sink, expected: int, what: str) -> None:
    received = sink.wait_for(expected, timeout=2.0)
    if received != expected:
        raise BenchmarkError(f"{what}: the sink counted {received:,} messages, not {expected:,}")


def check_once_each(sink: Sink, addresses: set[str], what: str) -> None:
    """Every address received exactly one copy, and nobody else received anything."""
    copies = sink.recipients()
    duplicates = {a: n for a, n in copies.items() if n > 1}
    missing = addresses - set(copies)
    unexpected = set(copies) - addresses
    if duplicates or missing or unexpected:
        sample = dict(list(duplicates.items())[:5])
        raise BenchmarkError(
            f"{what}: {len(duplicates):,} addresses received more than one copy {sample},"
            f" {len(missing):,} none, {len(unexpected):,} were not in the list"
        )


def check_logged_once_each(sink: Sink, addresses: Iterable[str], what: str) -> None:
    """Every address had exactly one RCPT in the sink's `-v` log, and nobody else had one.

    With the sink's count equal to the list's size (checked before), as many RCPT commands
    as transactions means each was part of a received message: one copy per address. (A
    transaction abandoned and sent again would show as a duplicate: none is expected here.)
    The log is streamed and the list is read one address at a time: the benchmark's own
    peak RSS, a floor of its children's on Linux, stays small.
    """
    sink.stop()  # every line written and flushed
    copies: Counter[bytes] = Counter()
    with (sink.folder / "stderr.log").open("rb") as log_file:  # start_sink's stderr file
        for line in log_file:
            if found := _RCPT.search(line):
                copies[found.group(1)] += 1
    duplicates = {a.decode(errors="replace"): n for a, n in copies.items() if n > 1}
    missing = sum(1 for address in addresses if copies.pop(address.encode(), 0) == 0)
    if duplicates or missing or copies:
        sample = dict(list(duplicates.items())[:5])
        raise BenchmarkError(
            f"{what}: the sink logged more than one RCPT for {len(duplicates):,} addresses"
            f" {sample}, none for {missing:,}, and {len(copies):,} not in the list"
        )


# --- the list -------------------------------------------------------------------------------


@dataclass
class Options:
    count: int
    concurrency: int
    mailmerge_count: int
    memory_counts: list[int]
    mailer_workers: list[int]
    workers: list[int]
    parts: list[str]
    postgres_url: str
    seed: int
    mailer: Path
    python: Path
    timeout: float
    keep: bool
    snapshot: Path | None


def run_folder(label: str) -> Path:
    folder = OUT / "runs" / f"send-{label}-{os.getpid()}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def mailer_env(options: Options, database_url: str, sink: Sink | None = None) -> dict[str, str]:
    extra = {"MAILER_DATABASE_URL": database_url, "MAILER_TEMPLATES_DIR": str(ROOT / "templates")}
    if sink is not None:
        extra |= {
            "MAILER_SMTP_HOST": sink.host,
            "MAILER_SMTP_PORT": str(sink.port),
            "MAILER_SMTP_SECURITY": "none",
        }
    if options.snapshot is not None:
        extra["PYTHONPATH"] = str(options.snapshot)
    return clean_environment(extra)


def import_list(options: Options, count: int, database_url: str, folder: Path) -> float:
    """`mailer import` the generated list of `count` subscribers; its seconds (not counted)."""
    csv_path, expected = cached_csv(OUT / "data", count, seed=options.seed, error_percent=0)
    if expected.imported != count:
        raise BenchmarkError(f"the generated list has {expected.imported:,} valid rows")
    measured = run_one(
        [str(options.mailer), "import", str(csv_path), "--json"],
        folder=folder,
        env=mailer_env(options, database_url),
        label="import",
        timeout=options.timeout,
    )
    report = json.loads(measured.stdout())
    if report.get("imported") != count:
        raise BenchmarkError(f"mailer import imported {report.get('imported')}, not {count:,}")
    return measured.wall_s


def iter_addresses(sqlite_path: Path) -> Iterator[str]:
    """The active subscribers' wire addresses, streamed."""
    query = "SELECT address FROM subscribers WHERE status = 'active'"
    with closing(sqlite3.connect(sqlite_path)) as connection:
        for (address,) in connection.execute(query):
            yield str(address)


def active_addresses(sqlite_path: Path, limit: int | None = None) -> list[dict[str, str]]:
    """The subscribers mailer will send to, as its database holds them (wire addresses)."""
    query = (
        "SELECT address, coalesce(first_name, ''), coalesce(last_name, ''),"
        " coalesce(civility, '') FROM subscribers WHERE status = 'active' ORDER BY id"
    )
    with sqlite3.connect(sqlite_path) as connection:
        rows = connection.execute(query + (f" LIMIT {int(limit)}" if limit else "")).fetchall()
    keys = ("email", "first_name", "last_name", "civility")
    return [dict(zip(keys, row, strict=True)) for row in rows]


# --- (a) the ceiling ------------------------------------------------------------------------


def ceiling(options: Options, database: Path, folder: Path) -> Run:
    """A child renders every message with mailer's MessageFactory, then blasts them."""
    with start_sink(*LOGGING_SINK, dump=False) as sink:
        sink_cpu = sink.cpu_seconds() or 0.0
        request = {
            "mode": "ceiling",
            "database_url": f"sqlite:///{database}",
            "host": sink.host,
            "port": sink.port,
            "connections": options.concurrency,
        }
        measured = run_one(
            [str(options.python), __file__, "--child", json.dumps(request)],
            folder=folder,
            env=mailer_env(options, f"sqlite:///{database}"),
            label="ceiling",
            timeout=options.timeout,
            check=False,
        )
        check_sent([measured], sink, "ceiling")
        result = json.loads(measured.stdout())
        check_sink(sink, result["messages"], "ceiling")
        if result["messages"] != options.count:
            raise BenchmarkError(f"ceiling: sent {result['messages']:,}, not {options.count:,}")
        run = make_run(
            "ceiling",
            "ceiling: aiosmtplib blast of pre-rendered messages",
            options.count,
            [measured],
            sink,
            sink_cpu,
            wall_s=result["blast_s"],
            cpu_s=result["blast_cpu_s"],
            busy_s=result["blast_busy_s"],
            details=result,
        )
        check_logged_once_each(sink, iter_addresses(database), "ceiling")
        return run


def ceiling_child(request: dict[str, Any]) -> dict[str, Any]:
    """In the child: render everything first (timed apart), then the blast (the ceiling)."""
    import aiosmtplib

    from mailer.api import open_database
    from mailer.core.states import SubscriberStatus
    from mailer.messages.factory import MessageFactory
    from mailer.store import subscribers as store
    from mailer.store.engine import read_transaction

    settings, campaign = _campaign(request["database_url"])
    factory = MessageFactory(campaign, CEILING_SECRET.encode(), "sendbench000")
    sender = campaign.sender.addr_spec
    started = time.perf_counter()
    date = datetime.now(UTC)
    messages: list[tuple[str, bytes]] = []
    with open_database(settings) as engine, read_transaction(engine) as connection:
        for row in store.iterate(connection, SubscriberStatus.ACTIVE):
            outgoing = factory.make(_recipient(row), date=date)
            messages.append((outgoing.recipient.address, outgoing.data))
    render_s = time.perf_counter() - started
    connections = int(request["connections"])

    async def connection_sends(share: list[tuple[str, bytes]]) -> None:
        smtp = aiosmtplib.SMTP(
            hostname=request["host"], port=int(request["port"]), start_tls=False, timeout=60
        )
        await smtp.connect()
        for recipient, data in share:
            await smtp.sendmail(sender, [recipient], data)
        await smtp.quit()

    async def blast() -> None:
        shares = [messages[i::connections] for i in range(connections)]
        await asyncio.gather(*(connection_sends(share) for share in shares if share))

    busy, cpu, t0 = machine_busy_seconds(), time.process_time(), time.perf_counter()
    asyncio.run(blast())
    blast_s = time.perf_counter() - t0
    return {
        "messages": len(messages),
        "bytes": sum(len(data) for _, data in messages),
        "render_s": render_s,
        "blast_s": blast_s,
        "blast_cpu_s": time.process_time() - cpu,
        "blast_busy_s": machine_busy_seconds() - busy,
        "connections": connections,
        "aiosmtplib": aiosmtplib.__version__,
    }


def _campaign(database_url: str) -> tuple[Any, Any]:
    from mailer.core.config import Settings
    from mailer.messages.campaign import load_campaign

    settings = Settings(database_url=database_url, templates_dir=ROOT / "templates")
    return settings, load_campaign(settings, CAMPAIGN)


def _recipient(row: Any) -> Any:
    from mailer.core.people import Recipient

    return Recipient.from_row(row)


# --- (b) mailmerge --------------------------------------------------------------------------

MAILMERGE_GREETING = (
    "Bonjour{% if civility and last_name %} {{ civility }} {{ last_name }}"
    "{% elif first_name %} {{ first_name }}{% endif %},"
)
BOUNDARY = "=_send_bench_alternative"


def mailmerge_template_child(request: dict[str, Any]) -> dict[str, Any]:
    """In a child: the closure notice's own subject and bodies, rendered by mailer for a
    subscriber without a name, as a mailmerge template (Jinja greeting, the rest verbatim)."""
    from mailer.core.people import Recipient
    from mailer.messages.factory import MessageFactory

    _settings, campaign = _campaign(request["database_url"])
    factory = MessageFactory(campaign, CEILING_SECRET.encode(), "sendbench000")
    nameless = Recipient(id=1, email="x@exemple.fr", address="x@exemple.fr", key="x@exemple.fr")
    outgoing = factory.make(nameless, date=datetime.now(UTC))
    parts = outgoing.parts

    def body(text: str) -> str:
        before, found, after = text.partition("Bonjour,")
        if not found:
            raise BenchmarkError("the closure notice has no 'Bonjour,' greeting to template")
        return (
            f"{{% raw %}}{before}{{% endraw %}}{MAILMERGE_GREETING}{{% raw %}}{after}{{% endraw %}}"
        )

    sections = [
        'TO: {% if first_name or last_name %}"{{ first_name }} {{ last_name }}" '
        "{% endif %}<{{ email }}>",
        f"SUBJECT: {parts.subject}",
        f"FROM: {campaign.sender}",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/alternative; boundary="{BOUNDARY}"',
        "",
        f"--{BOUNDARY}",
        "Content-Type: text/plain; charset=utf-8",
        "",
        body(parts.text),
    ]
    if parts.html:
        sections += [
            f"--{BOUNDARY}",
            "Content-Type: text/html; charset=utf-8",
            "",
            body(parts.html),
        ]
    sections += [f"--{BOUNDARY}--", ""]
    Path(request["path"]).write_text("\n".join(sections), encoding="utf-8")
    return {"mailer_bytes": len(outgoing.data)}


def ensure_mailmerge(folder: Path) -> tuple[Path, str]:
    """mailmerge in its own venv (benchmarks/.venv-mailmerge, git-ignored); its version."""
    executable = MAILMERGE_VENV / "bin" / "mailmerge"
    python = MAILMERGE_VENV / "bin" / "python"
    if not executable.exists():
        log(f"installing mailmerge=={MAILMERGE_VERSION} into {MAILMERGE_VENV}")
        install_log = folder / "mailmerge-install.log"
        with install_log.open("wb") as handle:
            steps = [
                [sys.executable, "-m", "venv", str(MAILMERGE_VENV)],
                [
                    str(python),
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    "-q",
                    f"mailmerge=={MAILMERGE_VERSION}",
                ],
            ]
            for step in steps:
                if subprocess.run(step, stdout=handle, stderr=handle, check=False).returncode:
                    raise BenchmarkError(
                        f"could not install mailmerge:\n{install_log.read_text(errors='replace')}"
                    )
    version = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('mailmerge'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return executable, version


def mailmerge(options: Options, database: Path, folder: Path) -> Run:
    executable, version = ensure_mailmerge(folder)
    count = min(options.mailmerge_count, options.count)
    template = folder / "mailmerge_template.txt"
    made = run_one(
        [
            str(options.python),
            __file__,
            "--child",
            json.dumps(
                {
                    "mode": "mailmerge-template",
                    "database_url": f"sqlite:///{database}",
                    "path": str(template),
                }
            ),
        ],
        folder=folder,
        env=mailer_env(options, f"sqlite:///{database}"),
        label="mailmerge-template",
        timeout=options.timeout,
    )
    mailer_bytes = json.loads(made.stdout())["mailer_bytes"]
    subscribers = active_addresses(database, count)
    with (folder / "mailmerge_database.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=("email", "first_name", "last_name", "civility"))
        writer.writeheader()
        writer.writerows(subscribers)
    with start_sink(dump=True) as sink:
        (folder / "mailmerge_server.conf").write_text(
            "[smtp_server]\n"
            f"host = {sink.host}\nport = {sink.port}\nsecurity = Never\nratelimit = 0\n",
            encoding="utf-8",
        )
        sink_cpu = sink.cpu_seconds() or 0.0
        measured = run_one(
            [
                str(executable),
                "--no-dry-run",
                "--no-limit",
                "--output-format",
                "text",
                "--template",
                "mailmerge_template.txt",
                "--database",
                "mailmerge_database.csv",
                "--config",
                "mailmerge_server.conf",
            ],
            folder=folder,
            env=clean_environment(),
            label="mailmerge",
            timeout=options.timeout,
            check=False,
        )
        check_sent([measured], sink, "mailmerge")
        with measured.stdout_path.open("rb") as output:  # every message is printed: stream it
            sent = sum(
                1 for line in output if line.startswith(b">>> message ") and b" sent" in line
            )
        if sent != count:
            raise BenchmarkError(f"mailmerge reported {sent:,} messages sent, not {count:,}")
        check_sink(sink, count, "mailmerge")
        check_once_each(sink, {s["email"] for s in subscribers}, "mailmerge")
        total_bytes = sum(len(item.wire_data) for item in sink.iter_messages())
        return make_run(
            "mailmerge",
            f"mailmerge {version} (`--no-dry-run --no-limit`)",
            count,
            [measured],
            sink,
            sink_cpu,
            details={
                "version": version,
                "average_bytes": total_bytes / count,
                "mailer_bytes_sample": mailer_bytes,
                "template_bytes": template.stat().st_size,
            },
        )


# --- (c) and (d) mailer send, SQLite --------------------------------------------------------


def send_argv(options: Options, workers: int | None = None) -> list[str]:
    """`mailer send`, with `--workers W` when given (else mailer's default, one process)."""
    return [
        str(options.mailer),
        "send",
        CAMPAIGN,
        "--concurrency",
        str(options.concurrency),
        *([] if workers is None else ["--workers", str(workers)]),
        "--json",
    ]


def check_status(output: str, count: int, what: str) -> dict[str, Any]:
    """The contract's status JSON: every delivery sent, nothing in any other state."""
    try:
        status = json.loads(output)
    except ValueError as exc:
        raise BenchmarkError(f"{what}: no JSON status: {exc}: {output[-500:]!r}") from exc
    counts = status.get("counts", {})
    others = {state: n for state, n in counts.items() if state != "sent" and n}
    if status.get("total") != count or counts.get("sent") != count or others:
        raise BenchmarkError(
            f"{what}: expected {count:,} sent of {count:,}; got total {status.get('total')},"
            f" counts {counts}"
        )
    return dict(status)


def check_sent(measured: Sequence[Measurement], sink: Sink, what: str) -> None:
    """Every process exited 0; if not, say so with its error and whether the sink was up."""
    failed = [m for m in measured if m.returncode != 0]
    if not failed:
        return
    code = sink.process.poll()
    state = "running" if code is None else f"exited with {code} (negative: killed by signal)"
    error = BenchmarkError if code is None else SinkKilled
    raise error(
        f"{what}: {len(failed)} of {len(measured)} process(es) failed; {' '.join(failed[0].argv)}"
        f" exited {failed[0].returncode}:\n{failed[0].stderr_tail()}\n(smtp-sink {state})"
    )


def mailer_sqlite(
    options: Options, count: int, database: Path, folder: Path, label: str, workers: int
) -> Run:
    """`mailer send --workers W` on an imported SQLite list, measured; verified by its JSON,
    the sink's count and the sink's log (one RCPT per subscriber)."""
    parent_peak = own_peak_mib()  # a child's ru_maxrss is at least this (Linux)
    what = f"mailer send --workers {workers} ({count:,})"
    with start_sink(*LOGGING_SINK, dump=False) as sink:
        sink_cpu = sink.cpu_seconds() or 0.0
        measured = run_one(
            send_argv(options, workers),
            folder=folder,
            env=mailer_env(options, f"sqlite:///{database}", sink),
            label=f"send-{count}-w{workers}",
            timeout=options.timeout,
            check=False,
        )
        check_sent([measured], sink, what)
        status = check_status(measured.stdout(), count, what)
        check_sink(sink, count, what)
        run = make_run(
            "mailer",
            label,
            count,
            [measured],
            sink,
            sink_cpu,
            details={"status": status, "parent_peak_mib": parent_peak, "workers": workers},
        )
        check_logged_once_each(sink, iter_addresses(database), what)
        return run


def prepared_sqlite(
    options: Options, count: int, label: str, folders: list[Path]
) -> tuple[Path, Path, float]:
    """A new run folder (recorded in `folders`, for clean-up) with the list imported."""
    folder = run_folder(label)
    folders.append(folder)
    database = folder / "subscribers.db"
    log(f"  importing {count:,} subscribers into SQLite ({folder.name})")
    seconds = import_list(options, count, f"sqlite:///{database}", folder)
    return folder, database, seconds


# --- (e) PostgreSQL workers -----------------------------------------------------------------


def workers_run(options: Options, workers: int) -> Run:
    folder = run_folder(f"pg-{workers}w")
    schema = f"mailer_send_bench_{os.getpid()}_{workers}"
    database = PostgresDatabase(options.postgres_url, schema)
    try:
        log(f"  importing {options.count:,} subscribers into PostgreSQL schema {schema}")
        import_list(options, options.count, database.url, folder)
        addresses = _pg_addresses(options, schema)
        with start_sink(dump=True) as sink:
            sink_cpu = sink.cpu_seconds() or 0.0
            env = mailer_env(options, database.url, sink)
            monitor = database.server_cpu()
            with monitor or nullcontext() as server:
                measured = run_processes(
                    [send_argv(options)] * workers,
                    cwd=folder,
                    env=env,
                    folder=folder,
                    label="send",
                    timeout=options.timeout,
                )
            check_sent(measured, sink, f"{workers} PostgreSQL workers")
            final = run_one(
                [str(options.mailer), "status", CAMPAIGN, "--json"],
                folder=folder,
                env=env,
                label="status",
                timeout=options.timeout,
            )
            what = f"{workers} PostgreSQL workers"
            status = check_status(final.stdout(), options.count, what)
            check_sink(sink, options.count, what)
            check_once_each(sink, addresses, what)
            return make_run(
                "workers",
                f"{workers} × mailer send (PostgreSQL)",
                options.count,
                measured,
                sink,
                sink_cpu,
                server_cpu_s=server.seconds if server else None,
                details={
                    "workers": workers,
                    "status": status,
                    "worker_seconds": [round(m.wall_s, 2) for m in measured],
                },
            )
    finally:
        database.drop()
        if not options.keep:
            shutil.rmtree(folder, ignore_errors=True)


def _pg_addresses(options: Options, schema: str) -> set[str]:
    """The active subscribers' wire addresses in a worker run's schema."""
    import psycopg

    conninfo = re.sub(r"^postgresql\+\w+://", "postgresql://", options.postgres_url)
    query = f"SELECT address FROM \"{schema}\".subscribers WHERE status = 'active'"
    with psycopg.connect(conninfo) as connection:
        return {row[0] for row in connection.execute(query).fetchall()}


# --- the report -----------------------------------------------------------------------------


def ratio(a: Run | None, b: Run | None) -> float | None:
    return a.rate / b.rate if a and b and b.rate else None


def mailer_runs(runs: dict[str, Run]) -> dict[int, Run]:
    """Part (c)'s runs by W (`mailer send --workers W`), keyed `mailer-W` in `runs`."""
    found = {int(key[7:]): run for key, run in runs.items() if key.startswith("mailer-")}
    return dict(sorted(found.items()))


def verdict(value: float | None, goal: float, *, at_most: bool = False) -> str:
    if value is None:
        return "—"
    return "**met**" if (value <= goal if at_most else value >= goal) else "**not met**"


def render(
    options: Options,
    runs: dict[str, Run],
    memory: dict[int, Run],
    workers: dict[int, Run],
    failures: dict[str, str],
    started: datetime,
    source: tuple[str, str, str],
) -> str:
    commit, at_start, at_end = source
    changed = (
        f" **mailer/ changed during the run ({at_start} -> {at_end}): results mix versions.**"
        if at_start != at_end
        else ""
    )
    lines = [
        f"## mailer send benchmark — {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {os.cpu_count()} cores (nproc {len(os.sched_getaffinity(0))}),"
        f" {platform.platform()}; Python {platform.python_version()}; {sink_version()};"
        f" mailer at {commit} (sources {at_start}"
        f"{', run from a frozen copy' if options.snapshot else ''});{changed}"
        f" {options.count:,} subscribers (seed {options.seed}), {options.concurrency}"
        " connections.",
        "",
        "| run | messages | connections | seconds | msgs/s | client CPU s | sink CPU s |"
        " peak RSS MiB | others' load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    table = [*runs.values(), *(workers[w] for w in sorted(workers))]
    for run in table:
        sink_cpu = "—" if run.sink_cpu_s is None else f"{run.sink_cpu_s:.1f}"
        lines.append(
            f"| {run.label} | {run.messages:,} | {run.connections:,} | {run.wall_s:.2f} |"
            f" {run.rate:,.0f} | {run.cpu_s:.1f} | {sink_cpu} | {run.max_rss_mib:.1f} |"
            f" {run.others_cores:.2f} |"
        )
    counts = sorted(memory)
    growth = (
        memory[counts[-1]].max_rss_mib / memory[counts[0]].max_rss_mib if len(counts) > 1 else None
    )
    lines += ["", "| ratio | value | goal | |", "|---|---:|---:|---|"]
    senders: dict[int, Run | None] = {**mailer_runs(runs)} or {1: None}  # "—" when none
    for w, sender in senders.items():
        to_ceiling = ratio(sender, runs.get("ceiling"))
        to_mailmerge = ratio(sender, runs.get("mailmerge"))
        lines += [
            f"| mailer `--workers {w}` / ceiling (msgs/s) | {fmt(to_ceiling, '.2f')} |"
            f" ≥ {GOAL_CEILING:.2f} | {verdict(to_ceiling, GOAL_CEILING)} |",
            f"| mailer `--workers {w}` / mailmerge (msgs/s) | {fmt(to_mailmerge, '.2f', '×')} |"
            f" ≥ {GOAL_MAILMERGE:g}× | {verdict(to_mailmerge, GOAL_MAILMERGE)} |",
        ]
    if growth is not None:
        lines.append(
            f"| mailer peak RSS, {counts[-1]:,} / {counts[0]:,} deliveries | {growth:.2f} |"
            f" ≤ {GOAL_MEMORY:.2f} | {verdict(growth, GOAL_MEMORY, at_most=True)} |"
        )
    if memory:
        lines += [
            "",
            "mailer's memory (SQLite; the import is another process, not counted):",
            "",
            "| deliveries | seconds | msgs/s | peak RSS MiB | connections |",
            "|---:|---:|---:|---:|---:|",
        ]
        for count in counts:
            run = memory[count]
            lines.append(
                f"| {count:,} | {run.wall_s:.2f} | {run.rate:,.0f} | {run.max_rss_mib:.1f} |"
                f" {run.connections:,} |"
            )
        floor = max(run.details.get("parent_peak_mib", 0.0) for run in memory.values())
        smallest = min(run.max_rss_mib for run in memory.values())
        own = "mailer's own" if floor < smallest else "mailer's own only where larger"
        lines += [
            "",
            f"This benchmark's own peak RSS was at most {floor:.1f} MiB when it started these"
            " runs (Linux reports a child's ru_maxrss as at least its parent's peak at fork):"
            f" the figures above are {own}.",
        ]
    if "ceiling" in runs:
        c = runs["ceiling"].details
        lines += [
            "",
            f"Ceiling: {c['messages']:,} messages ({c['bytes'] / c['messages']:,.0f} bytes on"
            f" average) rendered first by mailer's MessageFactory in {c['render_s']:.1f} s"
            f" ({c['messages'] / c['render_s']:,.0f}/s, not counted), then sent by"
            f" aiosmtplib {c['aiosmtplib']}: {c['connections']} connections, each its share in"
            " turn, one transaction per recipient. Its peak RSS holds every message.",
        ]
    if mailer_runs(runs):
        lines += ["", mailer_notes(runs)]
    if "mailmerge" in runs:
        m = runs["mailmerge"].details
        lines += [
            "",
            f"mailmerge {m['version']}: a multipart/alternative template made of the closure"
            " notice's own subject, text and HTML (rendered by mailer, greeting in Jinja;"
            f" {m['template_bytes']:,} bytes); its messages averaged {m['average_bytes']:,.0f}"
            f" bytes against mailer's {m['mailer_bytes_sample']:,}. It opens one connection per"
            " message, and prints each message (to a file here).",
        ]
    if workers:
        base = workers.get(min(workers))
        lines += [
            "",
            "PostgreSQL, W `mailer send` processes started at once on one list:",
            "",
            "| workers | connections | seconds | msgs/s | × 1 worker | each worker's seconds |"
            " server CPU s | every address exactly once |",
            "|---:|---:|---:|---:|---:|---|---:|---|",
        ]
        for w in sorted(workers):
            run = workers[w]
            server = "—" if run.server_cpu_s is None else f"{run.server_cpu_s:.1f}"
            speedup = f"{run.rate / base.rate:.2f}" if base and base.rate else "—"
            lines.append(
                f"| {w} | {run.connections:,} | {run.wall_s:.2f} | {run.rate:,.0f} | {speedup} |"
                f" {', '.join(str(s) for s in run.details['worker_seconds'])} | {server} |"
                " yes |"
            )
    retried = [run for run in [*table, *memory.values()] if run.details.get("attempts", 1) > 1]
    if retried:
        lines += [
            "",
            "Run again from scratch because smtp-sink was killed from outside during an earlier"
            " attempt (a shared machine): "
            + "; ".join(
                f"{run.label}, {run.messages:,} ({run.details['attempts']} attempts)"
                for run in retried
            )
            + ".",
        ]
    if failures:
        lines += ["", "**Parts that failed (not reported above):**", ""]
        lines += [f"- {part}: {message.splitlines()[0]}" for part, message in failures.items()]
    lines += [
        "",
        "Seconds: mailer's whole command (start-up, pre-flight, queueing, sending, recording);"
        " the ceiling's blast alone; mailmerge's whole command. Connections: sessions the sink"
        " counted. Client CPU: the sending process(es), user + system (os.wait4; with"
        " `--workers W`, the forked workers too, as the command reaps them). Sink CPU:"
        " smtp-sink meanwhile. Others' load: every other process on the machine, in busy cores"
        f" (the machine has {os.cpu_count()}): the noise. Peak RSS: ru_maxrss of the child(ren)"
        " (the largest process, forked workers included; not a sum); on Linux it is at least"
        " the parent's peak when the child started, and this benchmark's own peak was"
        f" {own_peak_mib():.1f} MiB. Sink CPU includes writing every message to its dump file"
        " for mailmerge and the PostgreSQL workers (to check one copy per address), and"
        " logging the SMTP commands (`-v`, no data) for the ceiling and mailer's SQLite runs."
        " Every run was checked: exit status 0, the JSON status (all sent), the sink's count,"
        " and one copy per address (from the dump, or one RCPT each in the sink's log).",
    ]
    return "\n".join(lines) + "\n"


def mailer_notes(runs: dict[str, Run]) -> str:
    """What mailer's time is made of: the fixed cost, and its own sending-phase timing."""
    fixed, top = runs.get("fixed"), runs.get("ceiling")
    notes = []
    if fixed:
        notes.append(
            f"mailer's fixed cost (start-up, database and campaign set-up, one delivery, one"
            f" process) is {fixed.wall_s:.2f} s."
        )
    for w, mailer in mailer_runs(runs).items():
        parts = []
        if fixed and mailer.wall_s > fixed.wall_s:
            steady = mailer.messages / (mailer.wall_s - fixed.wall_s)
            share = f" ({steady / top.rate:.2f} of the ceiling)" if top else ""
            parts.append(f"without the fixed cost, {steady:,.0f} msgs/s{share}")
        phase = mailer.details.get("status", {}).get("run", {}).get("seconds")
        if isinstance(phase, int | float) and phase > 0:
            share = f" ({mailer.messages / phase / top.rate:.2f} of the ceiling)" if top else ""
            parts.append(
                f"its own report of the sending phase (`run.seconds` in its JSON, after the"
                f" pre-flight and queueing): {phase:.2f} s, {mailer.messages / phase:,.0f}"
                f" msgs/s{share}"
            )
        if parts:
            notes.append(f"`--workers {w}`: {'; '.join(parts)}.")
    return " ".join(notes) or "—"


def own_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{suffix}"


def sink_version() -> str:
    try:
        found = subprocess.run(
            ["postconf", "-h", "mail_version"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "smtp-sink (Postfix, version unknown)"
    return f"smtp-sink (Postfix {found})"


# --- command line ---------------------------------------------------------------------------


def parse_parts(text: str) -> list[str]:
    return parse_choices(text, PARTS, "part(s)")


def parse_args(argv: Sequence[str] | None) -> Options | dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, help=f"deliveries (default {DEFAULT_COUNT:,})")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help="SMTP connections, for mailer and the ceiling (default 4)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2,000 deliveries, mailmerge 300, memory 2,000 and 20,000, workers 1,2",
    )
    parser.add_argument(
        "--mailmerge-count",
        type=int,
        help=f"mailmerge's subset (default {DEFAULT_MAILMERGE_COUNT:,})",
    )
    parser.add_argument("--skip-mailmerge", action="store_true", help="leave part (b) out")
    parser.add_argument(
        "--memory-counts",
        type=parse_counts,
        help="deliveries of the memory runs (default 20000,200000; 0 = none)",
    )
    parser.add_argument(
        "--mailer-workers",
        type=parse_counts,
        default=list(DEFAULT_MAILER_WORKERS),
        help="`mailer send --workers W` of part (c), on SQLite (default 1,2; 0 = none)",
    )
    parser.add_argument(
        "--workers", type=parse_counts, help="PostgreSQL worker counts (default 1,2,4; 0 = none)"
    )
    parser.add_argument(
        "--parts",
        type=parse_parts,
        default=list(PARTS),
        help=f"comma-separated, from {','.join(PARTS)} (default: all)",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("MAILER_BENCH_POSTGRES_URL", DEFAULT_POSTGRES),
        help="database for the worker runs (a schema per run is created and dropped)",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="generator seed")
    parser.add_argument("--mailer", type=Path, default=ROOT / ".venv" / "bin" / "mailer")
    parser.add_argument("--python", type=Path, default=ROOT / ".venv" / "bin" / "python")
    parser.add_argument(
        "--timeout",
        type=float,
        default=3600,
        help="seconds before a child process is killed (default 3600)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the run folders")
    parser.add_argument(
        "--snapshot",
        action="store_true",
        help="run a copy of mailer/ taken at start (edits meanwhile do not mix)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: a JSON request
    args = parser.parse_args(argv)
    if args.child:
        return dict(json.loads(args.child))
    quick = args.quick
    count = args.count or (QUICK_COUNT if quick else DEFAULT_COUNT)
    if count < 1 or args.concurrency < 1:
        parser.error("--count and --concurrency must be at least 1")
    parts = [p for p in args.parts if not (p == "mailmerge" and args.skip_mailmerge)]
    memory = args.memory_counts
    if memory is None:
        memory = list(QUICK_MEMORY_COUNTS if quick else DEFAULT_MEMORY_COUNTS)
    workers = args.workers
    if workers is None:
        workers = list(QUICK_WORKERS if quick else DEFAULT_WORKERS)
    mailmerge_count = args.mailmerge_count or (
        QUICK_MAILMERGE if quick else DEFAULT_MAILMERGE_COUNT
    )
    return Options(
        count=count,
        concurrency=args.concurrency,
        mailmerge_count=mailmerge_count,
        memory_counts=memory,
        mailer_workers=args.mailer_workers,
        workers=workers,
        parts=parts,
        postgres_url=args.postgres_url,
        seed=args.seed,
        mailer=args.mailer,
        python=args.python,
        timeout=args.timeout,
        keep=args.keep,
        snapshot=take_snapshot() if args.snapshot else None,
    )


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # run the `finally` blocks: stop the sinks, drop schemas


def attempt(
    failures: dict[str, str], part: str, action: Callable[..., Run], *args: Any
) -> Run | None:
    """Run one part; a failure is recorded for the report and the other parts go on.

    A part whose smtp-sink was killed from outside (a shared machine) runs again from
    scratch (a fresh database, a fresh sink), up to ATTEMPTS times; the report says so.
    """
    log(f"{part} ...")
    error: Exception | None = None
    for number in range(1, ATTEMPTS + 1):
        try:
            run = action(*args)
        except SinkKilled as exc:
            error = exc
            log(f"  attempt {number}: smtp-sink was killed during the run: {exc}")
            continue
        except (BenchmarkError, SinkError, OSError, ValueError, KeyError) as exc:
            error = exc
            break
        run.details["attempts"] = number
        log(
            f"  {run.messages:,} in {run.wall_s:.2f} s = {run.rate:,.0f} msgs/s,"
            f" peak RSS {run.max_rss_mib:.1f} MiB"
        )
        return run
    failures[part] = f"{type(error).__name__}: {error}"
    log(f"  {part} FAILED: {error}")
    return None


def memory_run(
    options: Options,
    count: int,
    folders: list[Path],
    label: str | None = None,
    workers: int = 1,
) -> Run:
    """`mailer send --workers W` on a freshly imported SQLite list of `count` subscribers."""
    folder, database, _ = prepared_sqlite(options, count, f"mailer-{count}-w{workers}", folders)
    label = label or f"mailer send `--workers {workers}` (SQLite)"
    return mailer_sqlite(options, count, database, folder, label, workers)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    if isinstance(options, dict):  # a child: print its JSON result
        child = {"ceiling": ceiling_child, "mailmerge-template": mailmerge_template_child}
        print(json.dumps(child[options["mode"]](options)))
        return 0
    signal.signal(signal.SIGTERM, _terminate)
    started = datetime.now(UTC)
    commit = revision()
    at_start = fingerprint(options.snapshot / "mailer") if options.snapshot else fingerprint()
    runs: dict[str, Run] = {}
    memory: dict[int, Run] = {}
    workers: dict[int, Run] = {}
    failures: dict[str, str] = {}
    folders: list[Path] = []
    parts = set(options.parts)
    memory_counts = options.memory_counts if "memory" in parts else []
    try:
        if parts & {"ceiling", "mailmerge"}:
            # The list both read (never send from): the ceiling's messages, mailmerge's rows.
            label = f"list-{options.count}"
            folder, database, _ = prepared_sqlite(options, options.count, label, folders)
            steps: list[tuple[str, Callable[[Options, Path, Path], Run]]] = [
                ("ceiling", ceiling),
                ("mailmerge", mailmerge),
            ]
            for part, step in steps:
                if part in parts and (
                    run := attempt(failures, part, step, options, database, folder)
                ):
                    runs[part] = run
        # The mailer runs import a list of their own: a retried run starts from an unsent list.
        for w in options.mailer_workers if "mailer" in parts else []:
            arguments = (options, options.count, folders, None, w)
            if run := attempt(failures, f"mailer --workers {w}", memory_run, *arguments):
                runs[f"mailer-{w}"] = run
        if "mailer" in parts:
            label = "mailer send, 1 subscriber (the fixed cost)"
            if run := attempt(
                failures, "mailer fixed cost", memory_run, options, 1, folders, label
            ):
                runs["fixed"] = run
        for count in memory_counts:  # one process (--workers 1)
            if count == options.count and "mailer-1" in runs:
                memory[count] = runs["mailer-1"]
                continue
            if run := attempt(failures, f"memory {count:,}", memory_run, options, count, folders):
                memory[count] = run
        for w in options.workers if "workers" in parts else []:
            if run := attempt(failures, f"workers {w}", workers_run, options, w):
                workers[w] = run
    except (BenchmarkError, SinkMissing) as exc:
        log(f"benchmark failed: {exc}")
        return 1
    finally:
        if not options.keep:
            for folder in folders:
                shutil.rmtree(folder, ignore_errors=True)
    frozen = options.snapshot is not None
    source = (commit, at_start, at_start if frozen else fingerprint())
    markdown = render(options, runs, memory, workers, failures, started, source)
    sys.stdout.write(markdown)
    stamp = f"{started:%Y%m%dT%H%M%S}"
    (OUT / f"send-results-{stamp}.md").write_text(markdown, encoding="utf-8")
    raw = {
        "started": started.isoformat(),
        "options": {k: str(v) for k, v in asdict(options).items()},
        "runs": [asdict(r) | {"rate": r.rate} for r in [*runs.values(), *workers.values()]],
        "memory": {str(n): asdict(r) | {"rate": r.rate} for n, r in memory.items()},
        "failures": failures,
    }
    (OUT / f"send-results-{stamp}.json").write_text(json.dumps(raw, indent=2), encoding="utf-8")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
