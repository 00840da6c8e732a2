"""Benchmark `mailer send` through a distant relay: 20 ms round trip, STARTTLS and AUTH.

A delay proxy (10 ms each way by default) in front of an aiosmtpd relay offering STARTTLS,
AUTH and PIPELINING, which counts what it gets; each in its own process (_delayproxy.py). In
one run, the same message count and K connections for these parts:

  ceiling            aiosmtplib, K persistent connections (EHLO, STARTTLS, EHLO, AUTH once),
                     `sendmail()` per pre-rendered message: MAIL, RCPT, DATA, the message;
  ceiling-pipelined  the same over asyncio streams, MAIL+RCPT+DATA in one write (RFC 2920);
  ceiling-grouped    also the message with its dot and the next MAIL+RCPT+DATA in one write;
  mailer             `mailer send closure-notice --yes --json`, concurrency K, on a fresh list;
  mailmerge          the `mailmerge` CLI (benchmarks/.venv-mailmerge), on a smaller count.

    .venv/bin/python benchmarks/distant_bench.py [--quick]    # 2,000 (400) messages
    .venv/bin/python benchmarks/distant_bench.py --parts ceiling,mailer --delay-ms 25

Markdown goes to standard output, progress to standard error; files to benchmarks/out/
(distant-results-<time>.md and .json). Exit status 1 if a part failed or did not check out.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import send_bench
from _delayproxy import HOST, DistantRelay, RelayError, aiosmtplib_session, pipelined_session
from _measure import Measurement, cached_csv, clean_environment, machine_busy_seconds, parse_choices
from import_bench import fingerprint, revision
from send_bench import BenchmarkError, log

HERE = Path(__file__).resolve().parent
ROOT, OUT = HERE.parent, HERE / "out"
MAILER = str(ROOT / ".venv" / "bin" / "mailer")
PARTS = ("ceiling", "ceiling-pipelined", "ceiling-grouped", "mailer", "mailmerge")
USER, PASSWORD = "bench", "distant-bench-password"
GOAL_CEILING, GOAL_MAILMERGE = 0.90, 10.0  # the goals, at equal connections
COMMANDS = ("EHLO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT")


@dataclass
class Options:
    count: int
    connections: int
    mailmerge_count: int
    delay_ms: float
    parts: list[str]
    timeout: float
    keep: bool


@dataclass
class Run:
    part: str
    messages: int
    wall_s: float
    cpu_s: float  # the client process, user + system
    relay: dict[str, float]  # the relay's counters during the part (see _delayproxy.py)
    proxy: dict[str, float]
    others_cores: float  # every other process on the machine meanwhile, in busy cores
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.messages / self.wall_s

    def per_message(self, value: float) -> float:
        return value / self.messages

    @property
    def round_trips(self) -> float:
        """Turns, plus 2 per connection before its greeting (the emulated TCP handshake)."""
        return self.per_message(self.proxy.get("turns", 0) + 2 * self.proxy.get("connections", 0))


def run_child(
    argv: Sequence[str], *, folder: Path, env: dict[str, str], label: str, timeout: float,
    stdin_text: str | None = None,
) -> Measurement:
    """Run to completion in its own session (no terminal: mailmerge's getpass reads stdin);
    its wall time and own rusage (os.wait4). Killed after `timeout`, or if we are stopped."""
    out, err = folder / f"{label}.out", folder / f"{label}.err"
    busy, started = machine_busy_seconds(), time.perf_counter()
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            list(argv), cwd=folder, env=env, stdout=stdout, stderr=stderr, start_new_session=True,
            stdin=subprocess.DEVNULL if stdin_text is None else subprocess.PIPE,
        )
    timer = threading.Timer(timeout, process.kill)
    timer.start()
    try:
        if process.stdin is not None:
            process.stdin.write((stdin_text or "").encode())
            process.stdin.close()
        _pid, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    finally:
        timer.cancel()
        if process.returncode is None:
            process.kill()
            process.wait()
    measured = Measurement(list(argv), process.returncode, time.perf_counter() - started,
                           usage.ru_utime, usage.ru_stime, usage.ru_maxrss, out, err,
                           machine_busy_seconds() - busy)
    if measured.returncode != 0:
        raise BenchmarkError(f"{label} exited {measured.returncode}:\n{measured.stderr_tail()}")
    return measured


def measure(part: str, relay: DistantRelay, messages: int,
            action: Callable[[], tuple[Measurement, dict[str, Any]]]) -> Run:
    """Run `action` between two readings of the relay's and the proxy's counters; check that
    the relay received exactly `messages`. Its details may time a part of the child only."""
    before = relay.stats()
    measured, details = action()
    time.sleep(0.2)  # the last QUITs and closes
    after = relay.stats()
    diff = {side: {k: v - before[side].get(k, 0) for k, v in after[side].items()
                   if isinstance(v, int | float)} for side in after}
    got = (diff["relay"].get("messages", 0), diff["relay"].get("cmd_RCPT", 0))
    if got != (messages, messages):
        raise BenchmarkError(f"{part}: the relay got {got} messages and RCPTs, not {messages}")
    wall, cpu = details.get("blast_s", measured.wall_s), details.get("blast_cpu_s", measured.cpu_s)
    others = max(0.0, details.get("blast_busy_s", measured.machine_busy_s) - cpu
                 - diff["relay"]["cpu_s"] - diff["proxy"]["cpu_s"])
    run = Run(part, messages, wall, cpu, diff["relay"], diff["proxy"], others / wall, details)
    log(f"  {messages:,} in {wall:.2f} s: {run.rate:,.1f} msgs/s, {run.round_trips:.2f} RT/msg")
    return run


def mailer_env(database: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    return clean_environment({"MAILER_DATABASE_URL": f"sqlite:///{database}",
                              "MAILER_TEMPLATES_DIR": str(ROOT / "templates"), **(extra or {})})


def import_list(options: Options, database: Path, folder: Path) -> None:
    csv_path, expected = cached_csv(OUT / "data", options.count, seed=send_bench.DEFAULT_SEED,
                                    error_percent=0)
    measured = run_child([MAILER, "import", str(csv_path), "--json"], folder=folder,
                         env=mailer_env(database), label="import", timeout=options.timeout)
    if json.loads(measured.stdout()).get("imported") != expected.imported:
        raise BenchmarkError(f"mailer import did not import the {expected.imported:,} rows")


# --- the ceilings (in a child process) ------------------------------------------------------


def ceiling_child(request: dict[str, Any]) -> dict[str, Any]:
    """Render every subscriber's message with mailer's MessageFactory, then send them all."""
    from mailer.api import open_database
    from mailer.core.states import SubscriberStatus
    from mailer.messages.factory import MessageFactory
    from mailer.sending.wire import normalize_line_ends, stuff_dots
    from mailer.store import subscribers as store
    from mailer.store.engine import read_transaction

    settings, campaign = send_bench._campaign(request["database_url"])
    factory = MessageFactory(campaign, send_bench.CEILING_SECRET.encode(), "distbench000")
    sender, date = campaign.sender.addr_spec, datetime.now(UTC)
    with open_database(settings) as engine, read_transaction(engine) as connection:
        messages = [(m.recipient.address, m.data) for m in (
            factory.make(send_bench._recipient(row), date=date)
            for row in store.iterate(connection, SubscriberStatus.ACTIVE))]
    k, port, variant = int(request["connections"]), int(request["port"]), request["variant"]
    context = ssl.create_default_context(cafile=request["ca_file"])
    if variant != "aiosmtplib":  # the wire form: CRLF, dots doubled, the final dot
        messages = [(r, stuff_dots(normalize_line_ends(d)) + b".\r\n") for r, d in messages]

    async def blast() -> None:
        session = aiosmtplib_session if variant == "aiosmtplib" else pipelined_session
        await asyncio.gather(*(session(port, context, (USER, PASSWORD), sender, messages[i::k],
                                       grouped=variant == "grouped")
                               for i in range(k) if messages[i::k]))

    busy, cpu, started = machine_busy_seconds(), time.process_time(), time.perf_counter()
    asyncio.run(blast())
    return {"messages": len(messages), "blast_s": time.perf_counter() - started,
            "blast_cpu_s": time.process_time() - cpu, "blast_busy_s": machine_busy_seconds() - busy,
            "bytes": sum(len(data) for _, data in messages)}


def ceiling(options: Options, relay: DistantRelay, folder: Path, database: Path,
            part: str) -> Run:
    variant = {"ceiling": "aiosmtplib", "ceiling-pipelined": "pipelined"}.get(part, "grouped")
    request = {"variant": variant, "database_url": f"sqlite:///{database}", "port": relay.port,
               "ca_file": str(relay.ca_file), "connections": options.connections}

    def action() -> tuple[Measurement, dict[str, Any]]:
        measured = run_child([sys.executable, __file__, "--child", json.dumps(request)],
                             folder=folder, env=mailer_env(database), label=part,
                             timeout=options.timeout)
        return measured, dict(json.loads(measured.stdout()))

    return measure(part, relay, options.count, action)


# --- mailer and mailmerge -------------------------------------------------------------------


def mailer(options: Options, relay: DistantRelay, folder: Path, _database: Path,
           _part: str) -> Run:
    database = folder / "mailer.db"  # a fresh list of its own
    import_list(options, database, folder)
    env = mailer_env(database, {
        "MAILER_SMTP_HOST": HOST, "MAILER_SMTP_PORT": str(relay.port),
        "MAILER_SMTP_SECURITY": "starttls", "MAILER_SMTP_CA_FILE": str(relay.ca_file),
        "MAILER_SMTP_USERNAME": USER, "MAILER_SMTP_PASSWORD": PASSWORD,
        "MAILER_CONCURRENCY": str(options.connections)})
    argv = [MAILER, "send", send_bench.CAMPAIGN, "--yes", "--json"]

    def action() -> tuple[Measurement, dict[str, Any]]:
        measured = run_child(argv, folder=folder, env=env, label="mailer-send",
                             timeout=options.timeout)
        status = send_bench.check_status(measured.stdout(), options.count, "mailer send")
        return measured, {"run": status.get("run", {}), "counts": status.get("counts")}

    return measure("mailer", relay, options.count, action)


def mailmerge(options: Options, relay: DistantRelay, folder: Path, database: Path,
              _part: str) -> Run:
    executable, version = send_bench.ensure_mailmerge(folder)
    count = min(options.mailmerge_count, options.count)
    request = {"mode": "mailmerge-template", "database_url": f"sqlite:///{database}",
               "path": str(folder / "template.txt")}
    run_child([sys.executable, str(HERE / "send_bench.py"), "--child", json.dumps(request)],
              folder=folder, env=mailer_env(database), label="mailmerge-template",
              timeout=options.timeout)
    with (folder / "database.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=("email", "first_name", "last_name", "civility"))
        writer.writeheader()
        writer.writerows(send_bench.active_addresses(database, count))
    (folder / "server.conf").write_text(
        f"[smtp_server]\nhost = {HOST}\nport = {relay.port}\nsecurity = STARTTLS\n"
        f"username = {USER}\nratelimit = 0\n", encoding="utf-8")
    argv = [str(executable), "--no-dry-run", "--no-limit", "--output-format", "text",
            "--template", "template.txt", "--database", "database.csv", "--config", "server.conf"]
    env = clean_environment({"SSL_CERT_FILE": str(relay.ca_file)})

    def action() -> tuple[Measurement, dict[str, Any]]:
        measured = run_child(argv, folder=folder, env=env, label="mailmerge",
                             timeout=options.timeout, stdin_text=PASSWORD + "\n")
        with measured.stdout_path.open("rb") as out:
            sent = sum(1 for line in out if line.startswith(b">>> message ") and b" sent" in line)
        if sent != count:
            raise BenchmarkError(f"mailmerge reported {sent:,} messages sent, not {count:,}")
        return measured, {"version": version}

    return measure("mailmerge", relay, count, action)


# --- the report -----------------------------------------------------------------------------


def ratio(runs: dict[str, Run], a: str, b: str, rate_a: float | None = None) -> str:
    top, bottom = runs.get(a), runs.get(b)
    if top is None or bottom is None or not bottom.rate:
        return "—"
    return f"{(rate_a or top.rate) / bottom.rate:.2f}"


def render(options: Options, runs: dict[str, Run], failures: dict[str, str], started: datetime,
           source: tuple[str, str, str]) -> str:
    commit, at_start, at_end = source
    changed = f" **mailer/ changed during the run ({at_start} → {at_end}).**" * (at_start != at_end)
    lines = [
        f"## distant relay benchmark — {started:%Y-%m-%d %H:%M} UTC", "",
        f"Machine: nproc {len(os.sched_getaffinity(0))}, {platform.platform()}; Python"
        f" {platform.python_version()}; mailer at {commit} (sources {at_start});{changed}"
        f" delay {options.delay_ms:g} ms each way, STARTTLS + AUTH PLAIN, {options.connections}"
        " connections.", "",
        "| part | messages | connections | seconds | msgs/s | round trips / msg | turns / msg |"
        " commands / msg | ms / round trip | one-way delay ms | client CPU s | relay CPU s |"
        " proxy CPU s | others' load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs.values():
        commands = sum(v for k, v in run.relay.items() if k.startswith("cmd_"))
        chunks = run.proxy.get("chunks_client", 0) + run.proxy.get("chunks_server", 0)
        delay = run.proxy.get("delay_sum_ms", 0) / chunks if chunks else 0.0
        parallel = 1 if run.part == "mailmerge" else options.connections  # one at a time
        per_trip = 1000 * run.wall_s * parallel / (run.round_trips * run.messages)
        lines.append(
            f"| {run.part} | {run.messages:,} | {run.proxy.get('connections', 0):,.0f} |"
            f" {run.wall_s:.2f} | {run.rate:,.1f} | {run.round_trips:.2f} |"
            f" {run.per_message(run.proxy.get('turns', 0)):.2f} | {run.per_message(commands):.2f} |"
            f" {per_trip:.1f} | {delay:.2f} |"
            f" {run.cpu_s:.2f} | {run.relay['cpu_s']:.2f} | {run.proxy['cpu_s']:.2f} |"
            f" {run.others_cores:.2f} |")
    lines += ["", "| part | " + " | ".join(COMMANDS) + " | other |",
              "|---|" + "---:|" * (len(COMMANDS) + 1)]
    for run in runs.values():
        named = [run.relay.get(f"cmd_{c}", 0) for c in COMMANDS]
        other = sum(v for k, v in run.relay.items() if k.startswith("cmd_")) - sum(named)
        lines.append(f"| {run.part} | " + " | ".join(f"{v:,.0f}" for v in [*named, other]) + " |")
    phase = runs["mailer"].details["run"].get("seconds") if "mailer" in runs else None
    phase_rate = runs["mailer"].messages / phase if phase else None
    lines += [
        "", "| ratio (msgs/s) | value | goal |", "|---|---:|---:|",
        f"| mailer / ceiling (whole command) | {ratio(runs, 'mailer', 'ceiling')} |"
        f" ≥ {GOAL_CEILING:.2f} |",
        f"| mailer's sending phase (`run.seconds`: {phase or 0:.2f} s) / ceiling |"
        f" {ratio(runs, 'mailer', 'ceiling', phase_rate)} | |",
        f"| mailer / mailmerge | {ratio(runs, 'mailer', 'mailmerge')} | ≥ {GOAL_MAILMERGE:g} |",
        f"| ceiling-pipelined / ceiling | {ratio(runs, 'ceiling-pipelined', 'ceiling')} | |",
        f"| ceiling-grouped / ceiling | {ratio(runs, 'ceiling-grouped', 'ceiling')} | |",
        "", "Seconds: the ceilings' sending alone (connections included, rendering not); mailer's"
        " and mailmerge's whole command. Round trips: the proxy's turns (a server chunk after a"
        " client chunk) plus 2 per connection (the emulated TCP handshake and the greeting)."
        " ms / round trip: seconds × connections in parallel (mailmerge: 1) / round trips."
        " Commands: what the relay received. Relay and proxy CPU: their processes meanwhile.",
    ]
    if failures:
        lines += ["", "**Parts that failed:**", ""]
        lines += [f"- {part}: {message.splitlines()[0]}" for part, message in failures.items()]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> Options | dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, help="messages per part (default 2,000)")
    parser.add_argument("--connections", type=int, default=4, help="K (default 4)")
    parser.add_argument("--mailmerge-count", type=int, help="mailmerge's messages (default 100)")
    parser.add_argument("--delay-ms", type=float, default=10.0, help="one-way delay (default 10)")
    parser.add_argument("--quick", action="store_true", help="400 messages, mailmerge 30")
    parser.add_argument("--parts", type=lambda text: parse_choices(text, PARTS, "part(s)"),
                        default=list(PARTS), help=f"from {','.join(PARTS)} (default: all)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per child process")
    parser.add_argument("--keep", action="store_true", help="keep the run folder")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return dict(json.loads(args.child))
    count = args.count or (400 if args.quick else 2_000)
    mailmerge_count = args.mailmerge_count or (30 if args.quick else 100)
    if min(count, args.connections, mailmerge_count) < 1 or args.delay_ms < 0:
        parser.error("counts and --connections must be at least 1, --delay-ms at least 0")
    return Options(count, args.connections, mailmerge_count, args.delay_ms, args.parts,
                   args.timeout, args.keep)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    if isinstance(options, dict):
        print(json.dumps(ceiling_child(options)))
        return 0
    signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(128 + signum))  # run `finally`s
    started, commit, at_start = datetime.now(UTC), revision(), fingerprint()
    folder = OUT / "runs" / f"distant-{os.getpid()}"
    folder.mkdir(parents=True)
    runs: dict[str, Run] = {}
    failures: dict[str, str] = {}
    steps = {"ceiling": ceiling, "ceiling-pipelined": ceiling, "ceiling-grouped": ceiling,
             "mailer": mailer, "mailmerge": mailmerge}
    try:
        with DistantRelay(folder, options.delay_ms, USER, PASSWORD) as relay:
            database = folder / "list.db"  # the ceilings' and mailmerge's list (read only)
            if set(options.parts) - {"mailer"}:
                import_list(options, database, folder)
            for part in options.parts:
                log(f"{part} ...")
                try:
                    runs[part] = steps[part](options, relay, folder, database, part)
                except (BenchmarkError, RelayError, OSError, ValueError, KeyError) as exc:
                    failures[part] = f"{type(exc).__name__}: {exc}"
                    log(f"  {part} FAILED: {exc}")
    finally:
        if not options.keep:
            shutil.rmtree(folder, ignore_errors=True)
    markdown = render(options, runs, failures, started, (commit, at_start, fingerprint()))
    sys.stdout.write(markdown)
    stamp = f"{started:%Y%m%dT%H%M%S}"
    (OUT / f"distant-results-{stamp}.md").write_text(markdown, encoding="utf-8")
    raw = {"started": started.isoformat(), "options": asdict(options), "failures": failures,
           "runs": [asdict(r) | {"rate": r.rate, "round_trips": r.round_trips}
                    for r in runs.values()]}
    (OUT / f"distant-results-{stamp}.json").write_text(json.dumps(raw, indent=2), encoding="utf-8")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
