"""Benchmark `mailer import`: rows per second and peak memory, SQLite and PostgreSQL.

Generates a deterministic French-Excel-like export per size (cp1252, `;`, CRLF, ~1% invalid
addresses, ~1% duplicates), imports it with the real CLI as a child process into a fresh
database, and measures that child's wall time, CPU time and peak RSS (os.wait4). Every run's
JSON summary and the database row count are checked against what the generator produced, so
a broken run fails instead of being reported. Python's csv module reading the same file is
measured alongside as a ceiling.

    .venv/bin/python benchmarks/import_bench.py                  # 100k and 1M, both backends
    .venv/bin/python benchmarks/import_bench.py --quick          # 20k and 100k
    .venv/bin/python benchmarks/import_bench.py --profile 100000 --backends sqlite --sizes 0

Markdown goes to standard output, progress to standard error; files go to benchmarks/out/.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import pstats
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from _measure import (
    Expected,
    Measurement,
    cached_csv,
    clean_environment,
    parse_choices,
    parse_counts,
    process_cpu_seconds,
    run_measured,
)

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(__file__).resolve().parent / "out"
BACKENDS = ("sqlite", "postgresql")
DEFAULT_SIZES = (100_000, 1_000_000)
QUICK_SIZES = (20_000, 100_000)
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
CEILING_RUNS = 3  # the csv ceiling is cheap: best of 3 per repeat

# The ceiling: the same file through Python's csv module, decoded, nothing else.
CEILING_CODE = """\
import csv, sys
rows = 0
with open(sys.argv[1], encoding="cp1252", newline="") as handle:
    for _row in csv.reader(handle, delimiter=";"):
        rows += 1
print(rows)
"""


class BenchmarkError(RuntimeError):
    """A run that must not be reported: it failed or its counts are wrong."""


@dataclass
class Run:
    kind: str  # "sqlite", "postgresql" or "csv"
    rows: int
    wall_s: float
    cpu_s: float  # the child process (mailer, or the csv ceiling)
    max_rss_mib: float
    server_cpu_s: float | None  # PostgreSQL backends serving the child; None for SQLite
    others_cores: float  # other processes on the machine meanwhile, in busy cores

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.wall_s if self.wall_s else 0.0


@dataclass
class Result:
    """Repeated runs of one (kind, rows): the fastest run's times, the highest peak RSS."""

    kind: str
    rows: int
    runs: list[Run] = field(default_factory=list)

    @property
    def best(self) -> Run:
        return min(self.runs, key=lambda run: run.wall_s)

    @property
    def wall_s(self) -> float:
        return self.best.wall_s

    @property
    def max_rss_mib(self) -> float:
        return max(r.max_rss_mib for r in self.runs)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.wall_s if self.wall_s else 0.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- databases ------------------------------------------------------------------------------


class Database:
    """A fresh, empty database for one run: its URL, its row count, its removal."""

    url: str

    def server_cpu(self) -> ServerCpu | None:
        """A monitor of the database server's CPU spent on this run, if there is a server."""
        return None

    def count_subscribers(self) -> int:
        raise NotImplementedError

    def drop(self) -> None:
        raise NotImplementedError


class SqliteDatabase(Database):
    def __init__(self, folder: Path) -> None:
        self.path = folder / "subscribers.db"
        self.url = f"sqlite:///{self.path}"

    def count_subscribers(self) -> int:
        with sqlite3.connect(self.path) as connection:
            (count,) = connection.execute("SELECT count(*) FROM subscribers").fetchone()
        return int(count)

    def drop(self) -> None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)


class PostgresDatabase(Database):
    """A schema of its own in the given database, dropped afterwards."""

    def __init__(self, base_url: str, schema: str) -> None:
        import psycopg

        self.schema = schema
        self._conninfo = re.sub(r"^postgresql\+\w+://", "postgresql://", base_url)
        self._psycopg = psycopg
        with psycopg.connect(self._conninfo, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            connection.execute(f'CREATE SCHEMA "{schema}"')
        separator = "&" if "?" in base_url else "?"
        search_path = quote(f"-csearch_path={schema}", safe="")
        # application_name lets ServerCpu find the backends that serve this run
        self.url = f"{base_url}{separator}options={search_path}&application_name={schema}"

    def server_cpu(self) -> ServerCpu | None:
        """Only for a server on this machine: its pids mean nothing elsewhere."""
        host = self._psycopg.conninfo.conninfo_to_dict(self._conninfo).get("host")
        local = host is None or str(host) in ("", "localhost", "127.0.0.1", "::1")
        if not (local or str(host).startswith("/")):
            return None
        return ServerCpu(self._conninfo, self.schema)

    def count_subscribers(self) -> int:
        with self._psycopg.connect(self._conninfo) as connection:
            row = connection.execute(f'SELECT count(*) FROM "{self.schema}".subscribers').fetchone()
        assert row is not None
        return int(row[0])

    def drop(self) -> None:
        with self._psycopg.connect(self._conninfo, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')


class ServerCpu:
    """CPU seconds of the PostgreSQL backends with one application_name, while it runs.

    Polls pg_stat_activity for their pids and reads /proc/<pid>/stat, so it works only when
    the server runs on this machine (else `seconds` is None). A backend's last fraction of a
    second before it exits is missed.
    """

    POLL_S = 0.25

    def __init__(self, conninfo: str, application_name: str) -> None:
        self._conninfo = conninfo
        self._name = application_name
        self._seen: dict[int, float] = {}
        self._failed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> ServerCpu:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        import psycopg

        query = "SELECT pid FROM pg_stat_activity WHERE application_name = %s"
        try:
            with psycopg.connect(self._conninfo, autocommit=True) as connection:
                while True:
                    for (pid,) in connection.execute(query, (self._name,)).fetchall():
                        cpu = process_cpu_seconds(int(pid), expect_name="postgres")
                        if cpu is None:
                            self._failed = True
                        else:
                            self._seen[int(pid)] = max(cpu, self._seen.get(int(pid), 0.0))
                    if self._stop.wait(self.POLL_S):
                        return
        except psycopg.Error:
            self._failed = True

    @property
    def seconds(self) -> float | None:
        if self._failed or not self._seen:
            return None
        return sum(self._seen.values())


_counter = 0


@contextmanager
def fresh_database(backend: str, folder: Path, postgres_url: str) -> Iterator[Database]:
    global _counter
    _counter += 1
    database: Database
    if backend == "sqlite":
        database = SqliteDatabase(folder)
    else:
        database = PostgresDatabase(postgres_url, f"mailer_bench_{os.getpid()}_{_counter}")
    try:
        yield database
    finally:
        database.drop()


# --- runs -----------------------------------------------------------------------------------


def run_folder(label: str) -> Path:
    folder = OUT / "runs" / f"{label}-{os.getpid()}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def check_report(report: dict[str, Any], expected: Expected, database_rows: int) -> None:
    """Refuse a run whose summary or database differs from what the generator wrote."""
    # Lists of lines today; a count is accepted too, should the report ever bound its lists.
    rejected = report.get("rejected", [])
    warnings = report.get("warnings", [])
    wanted: dict[str, object] = {
        "rows": expected.rows,
        "imported": expected.imported,
        "updated": 0,
        "unchanged": 0,
        "duplicates": expected.duplicates,
        "len(rejected)": expected.invalid,
        "len(warnings)": expected.duplicates,  # one "duplicate of line N" each, nothing else
        "database rows": expected.imported,
    }
    if expected.rows:
        wanted |= {"encoding": "windows-1252", "delimiter": ";"}
    got = {
        **{key: report.get(key) for key in ("rows", "imported", "updated", "unchanged")},
        "duplicates": report.get("duplicates"),
        "len(rejected)": rejected if isinstance(rejected, int) else len(rejected),
        "len(warnings)": warnings if isinstance(warnings, int) else len(warnings),
        "database rows": database_rows,
        "encoding": report.get("encoding"),
        "delimiter": report.get("delimiter"),
    }
    wrong = {k: (got[k], v) for k, v in wanted.items() if got[k] != v}
    if wrong:
        details = ", ".join(f"{k}: got {g!r}, expected {w!r}" for k, (g, w) in wrong.items())
        raise BenchmarkError(f"wrong import summary: {details}")


def import_once(
    options: Options, backend: str, csv_path: Path, expected: Expected, *, profile: Path | None
) -> Run:
    """One `mailer import FILE --json` into a fresh database, measured and verified."""
    folder = run_folder(f"{backend}-{expected.rows}")
    with fresh_database(backend, folder, options.postgres_url) as database:
        extra = {"MAILER_DATABASE_URL": database.url}
        if options.snapshot is not None:
            extra["PYTHONPATH"] = str(options.snapshot)
        env = clean_environment(extra)
        if profile is None:
            argv = [str(options.mailer), "import", str(csv_path), "--json"]
        else:
            python = [str(options.python), "-m", "cProfile", "-o", str(profile)]
            argv = [*python, "-m", "mailer", "import", str(csv_path), "--json"]
        with database.server_cpu() or nullcontext() as server:
            measured = run_measured(
                argv,
                cwd=folder,
                env=env,
                stdout_path=folder / "stdout.json",
                stderr_path=folder / "stderr.txt",
            )
        server_cpu = server.seconds if server is not None else None
        if measured.returncode != 0:
            raise BenchmarkError(
                f"{' '.join(argv)} exited {measured.returncode}:\n{measured.stderr_tail()}"
            )
        try:
            report = json.loads(measured.stdout())
        except ValueError as exc:
            raise BenchmarkError(f"mailer printed no JSON summary: {exc}") from exc
        check_report(report, expected, database.count_subscribers())
    if not options.keep:
        shutil.rmtree(folder, ignore_errors=True)
    return _run(backend, expected.rows, measured, server_cpu)


def ceiling_once(options: Options, csv_path: Path, expected: Expected) -> Run:
    """Python's csv module alone over the same file: the ceiling for any Python importer."""
    folder = run_folder(f"csv-{expected.rows}")
    measured = run_measured(
        [str(options.python), "-c", CEILING_CODE, str(csv_path)],
        cwd=folder,
        env=clean_environment(),
        stdout_path=folder / "stdout.txt",
        stderr_path=folder / "stderr.txt",
    )
    if measured.returncode != 0 or measured.stdout().strip() != str(expected.rows + 1):
        raise BenchmarkError(f"csv ceiling run failed:\n{measured.stderr_tail()}")
    shutil.rmtree(folder, ignore_errors=True)
    return _run("csv", expected.rows, measured, None)


def _run(kind: str, rows: int, measured: Measurement, server_cpu: float | None) -> Run:
    others = measured.machine_busy_s - measured.cpu_s - (server_cpu or 0.0)
    return Run(
        kind,
        rows,
        measured.wall_s,
        measured.cpu_s,
        measured.max_rss_mib,
        server_cpu,
        max(0.0, others / measured.wall_s) if measured.wall_s else 0.0,
    )


# --- profile --------------------------------------------------------------------------------


_SKIPPED_FRAMES = ("<frozen", "<string>", "typer/", "click/", "runpy")


def _where(filename: str) -> str:
    """A short place name: mailer/importer.py, email_validator/syntax.py, stdlib csv.py, (C)."""
    if filename == "~":
        return "(C)"
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1]
    snapshot = re.search(r"/snapshot/[0-9a-f]+/(mailer/.*)$", filename)
    if snapshot:  # a frozen copy (--snapshot): name it as the source it was copied from
        return snapshot.group(1)
    if filename.startswith(f"{ROOT}/"):
        return filename[len(str(ROOT)) + 1 :]
    if re.search(r"/lib/python3\.\d+/", filename):
        return "stdlib " + re.split(r"/lib/python3\.\d+/", filename, maxsplit=1)[1]
    return filename


def _package(filename: str, function: str) -> str:
    """Who owns a function's own time: mailer, a library, stdlib, the import system, C."""
    where = _where(filename)
    if where == "(C)":
        if "sqlite3" in function or "psycopg" in function:
            return "database driver (C)"
        return "built-ins (C)"
    if filename.startswith("<frozen importlib"):
        return "import system (start-up)"
    if where.startswith("stdlib "):
        return "stdlib " + where.split()[1].split("/")[0].removesuffix(".py")
    return where.split("/")[0].removesuffix(".py")


def hot_spots(stats_path: Path, top: int) -> str:
    """Markdown: the top functions by cumulative time, and own time by package."""
    stats = pstats.Stats(str(stats_path))
    entries: dict[tuple[str, int, str], tuple[int, int, float, float, object]] = stats.stats  # type: ignore[attr-defined]
    total: float = stats.total_tt  # type: ignore[attr-defined]
    lines = [
        f"Total profiled time {total:.2f} s.",
        "",
        "| function | calls | own s | cumulative s | cumulative % |",
        "|---|---:|---:|---:|---:|",
    ]
    ranked = sorted(entries.items(), key=lambda item: -item[1][3])
    shown = 0
    for (filename, line, function), (_cc, calls, own, cumulative, _callers) in ranked:
        if cumulative >= 0.97 * total or filename.startswith(_SKIPPED_FRAMES):
            continue
        if any(part in _where(filename) for part in _SKIPPED_FRAMES):
            continue
        place = _where(filename)
        name = function if place == "(C)" else f"{place}:{line} {function}"
        lines.append(
            f"| `{name}` | {calls:,} | {own:.2f} | {cumulative:.2f} | "
            f"{100 * cumulative / total:.0f} % |"
        )
        shown += 1
        if shown >= top:
            break
    owners: dict[str, float] = {}
    for (filename, _line, function), (_cc, _calls, own, _cum, _callers) in entries.items():
        owner = _package(filename, function)
        owners[owner] = owners.get(owner, 0.0) + own
    lines += ["", "| own time by package | s | % |", "|---|---:|---:|"]
    for owner, own in sorted(owners.items(), key=lambda item: -item[1])[:12]:
        lines.append(f"| {owner} | {own:.2f} | {100 * own / total:.0f} % |")
    return "\n".join(lines) + "\n"


def profile(options: Options, rows: int) -> str:
    """cProfile one SQLite import of `rows` rows; return its hot spots as markdown."""
    csv_path, expected = cached_csv(
        OUT / "data", rows, seed=options.seed, error_percent=options.error_percent
    )
    stats_path = OUT / f"profile-sqlite-{rows}.pstats"
    log(f"profiling a {rows:,}-row SQLite import -> {stats_path}")
    run = import_once(options, "sqlite", csv_path, expected, profile=stats_path)
    report = (
        f"### Profile: one {rows:,}-row SQLite import under cProfile"
        f" ({run.wall_s:.1f} s wall with the profiler on)\n\n"
        + hot_spots(stats_path, options.profile_top)
    )
    full = io.StringIO()
    stats = pstats.Stats(str(stats_path), stream=full)
    stats.sort_stats(pstats.SortKey.CUMULATIVE).print_stats(60)
    stats.sort_stats(pstats.SortKey.TIME).print_stats(60)
    report_path = stats_path.with_suffix(".txt")
    report_path.write_text(report + "\n" + full.getvalue(), encoding="utf-8")
    log(f"profile written to {report_path} (view: python -m pstats {stats_path})")
    return report


# --- report ---------------------------------------------------------------------------------


def revision() -> str:
    """The commit being measured, and whether mailer/ has uncommitted changes (read-only git)."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # never refresh the index
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "mailer"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown revision"
    return f"commit {head}" + (" + uncommitted changes in mailer/" if dirty else "")


def fingerprint(package: Path = ROOT / "mailer") -> str:
    """A short hash of mailer/'s sources: other people may edit them while a benchmark runs."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def take_snapshot() -> Path:
    """Copy mailer/ to benchmarks/out/snapshot/<hash>/mailer, for PYTHONPATH: the runs then
    measure one version even if mailer/ is edited meanwhile (the console script imports
    whichever `mailer` comes first on sys.path, and PYTHONPATH precedes the editable install).
    """
    folder = OUT / "snapshot" / fingerprint()
    if not (folder / "mailer").exists():
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(
            ROOT / "mailer", folder / "mailer", ignore=shutil.ignore_patterns("__pycache__")
        )
    return folder


def mib(value: float) -> str:
    return f"{value:.1f}"


def render(
    results: dict[tuple[str, int], Result],
    baselines: dict[str, Result],
    expected: dict[int, Expected],
    options: Options,
    started: datetime,
    source: tuple[str, str, str],
) -> str:
    sizes = sorted(expected)
    commit, at_start, at_end = source
    changed = (
        f" **mailer/ changed during the run ({at_start} -> {at_end}): results mix versions.**"
        if at_start != at_end
        else ""
    )
    lines = [
        f"## mailer import benchmark — {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {os.cpu_count()} cores (nproc {len(os.sched_getaffinity(0))}),"
        f" {platform.platform()}; Python {platform.python_version()};"
        f" mailer at {commit} (sources {at_start}"
        f"{', run from a frozen copy' if options.snapshot else ''});{changed}"
        f" fastest of {options.repeat} run(s) per line.",
        "",
        "| backend | rows | seconds | rows/s | rows/s after start-up | mailer CPU s |"
        " server CPU s | peak RSS MiB | % of csv ceiling | others' load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for backend in options.backends:
        for rows in sizes:
            result = results.get((backend, rows))
            if result is None:
                continue
            ceiling = results.get(("csv", rows))
            fraction = (
                f"{100 * result.rows_per_s / ceiling.rows_per_s:.1f} %"
                f" (1/{ceiling.rows_per_s / result.rows_per_s:.0f})"
                if ceiling
                else "—"
            )
            base = baselines.get(backend)
            steady = (
                f"{rows / (result.wall_s - base.wall_s):,.0f}"
                if base and result.wall_s > base.wall_s
                else "—"
            )
            best = result.best
            server = "—" if best.server_cpu_s is None else f"{best.server_cpu_s:.1f}"
            lines.append(
                f"| {backend} | {rows:,} | {best.wall_s:.1f} | {result.rows_per_s:,.0f} | "
                f"{steady} | {best.cpu_s:.1f} | {server} | {mib(result.max_rss_mib)} | "
                f"{fraction} | {best.others_cores:.2f} |"
            )
    lines += [
        "",
        "Ceiling — Python's csv module alone reading and decoding the same file"
        f" (cp1252, `;`; no validation, no database; best of {CEILING_RUNS * options.repeat}):",
        "",
        "| rows | file MiB | seconds | rows/s | peak RSS MiB |",
        "|---:|---:|---:|---:|---:|",
    ]
    for rows in sizes:
        ceiling = results.get(("csv", rows))
        if ceiling:
            lines.append(
                f"| {rows:,} | {expected[rows].size_bytes / 2**20:.1f} | {ceiling.wall_s:.2f} | "
                f"{ceiling.rows_per_s:,.0f} | {mib(ceiling.max_rss_mib)} |"
            )
    if len(sizes) > 1:
        small, large = sizes[0], sizes[-1]
        lines += [
            "",
            f"Peak memory growth, {large:,} rows against {small:,}"
            " (flat memory means a ratio of ~1.0):",
            "",
            "| backend | RSS ratio | MiB added | startup RSS MiB (one-row file) |",
            "|---|---:|---:|---:|",
        ]
        for backend in options.backends:
            a, b = results.get((backend, small)), results.get((backend, large))
            if a and b:
                base = baselines.get(backend)
                lines.append(
                    f"| {backend} | {b.max_rss_mib / a.max_rss_mib:.2f} | "
                    f"{b.max_rss_mib - a.max_rss_mib:+.1f} | "
                    f"{mib(base.max_rss_mib) if base else '—'} |"
                )
    if baselines:
        lines += [
            "",
            "Fixed cost (start-up, schema creation, a one-row import; included in every line): "
            + "; ".join(
                f"{b}: {r.wall_s:.2f} s, {mib(r.max_rss_mib)} MiB" for b, r in baselines.items()
            )
            + ".",
        ]
    lines += [
        "",
        "mailer CPU s: user + system time of the mailer process alone (os.wait4). Server CPU s:"
        " the PostgreSQL backends serving it (/proc). Others' load: CPU used meanwhile by every"
        " other process on the machine, in busy cores (the machine has"
        f" {os.cpu_count()}): the noise.",
    ]
    lines += [
        "",
        "Files: "
        + "; ".join(
            f"{rows:,} rows = {e.invalid:,} invalid + {e.duplicates:,} duplicates"
            f" + {e.imported:,} imported"
            for rows, e in sorted(expected.items())
        )
        + f" (seed {options.seed}, error rate {options.error_percent:g} %)"
        + ". Every run's JSON summary and database row count matched these.",
    ]
    return "\n".join(lines) + "\n"


# --- command line ---------------------------------------------------------------------------


@dataclass
class Options:
    sizes: list[int]
    backends: list[str]
    repeat: int
    seed: int
    error_percent: float
    postgres_url: str
    mailer: Path
    python: Path
    keep: bool
    snapshot: Path | None  # a frozen copy of mailer/ to run (see take_snapshot)
    profile: int | None
    profile_top: int


def parse_backends(text: str) -> list[str]:
    return parse_choices(text, BACKENDS, "backend(s)")


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=parse_counts,
        help="comma-separated row counts (default: 100000,1000000; 0 = none)",
    )
    parser.add_argument(
        "--backends",
        type=parse_backends,
        default=list(BACKENDS),
        help="comma-separated: sqlite,postgresql (default: both)",
    )
    parser.add_argument("--quick", action="store_true", help="sizes 20000,100000: a fast check")
    parser.add_argument("--repeat", type=int, default=1, help="runs per line; best time is shown")
    parser.add_argument("--seed", type=int, default=20240601, help="generator seed")
    parser.add_argument(
        "--error-rate",
        type=float,
        default=1.0,
        metavar="PERCENT",
        help="percent of rows with an invalid address, and as many duplicates (default: 1)",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("MAILER_BENCH_POSTGRES_URL", DEFAULT_POSTGRES),
        help="database for the PostgreSQL runs (a schema per run is created and dropped)",
    )
    parser.add_argument("--mailer", type=Path, default=ROOT / ".venv" / "bin" / "mailer")
    parser.add_argument("--python", type=Path, default=ROOT / ".venv" / "bin" / "python")
    parser.add_argument("--keep", action="store_true", help="keep the databases of SQLite runs")
    parser.add_argument(
        "--snapshot",
        action="store_true",
        help="run a copy of mailer/ taken at start, so edits made meanwhile do not mix in",
    )
    parser.add_argument(
        "--profile",
        type=int,
        metavar="ROWS",
        help="also cProfile one SQLite import of ROWS rows and print its hot spots",
    )
    parser.add_argument("--profile-top", type=int, default=25, help="functions shown per sort")
    args = parser.parse_args(argv)
    sizes = args.sizes if args.sizes is not None else list(DEFAULT_SIZES)
    if args.quick and args.sizes is None:
        sizes = list(QUICK_SIZES)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if not 0 <= args.error_rate <= 40:
        parser.error("--error-rate must be between 0 and 40")
    return Options(
        sizes=sizes,
        backends=args.backends,
        repeat=args.repeat,
        seed=args.seed,
        error_percent=args.error_rate,
        postgres_url=args.postgres_url,
        mailer=args.mailer,
        python=args.python,
        keep=args.keep,
        snapshot=take_snapshot() if args.snapshot else None,
        profile=args.profile,
        profile_top=args.profile_top,
    )


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # run the `finally` blocks: drop schemas, stop the child


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    started = datetime.now(UTC)
    commit = revision()
    source_at_start = (
        fingerprint(options.snapshot / "mailer") if options.snapshot else fingerprint()
    )
    results: dict[tuple[str, int], Result] = {}
    baselines: dict[str, Result] = {}
    expected: dict[int, Expected] = {}
    try:
        if options.sizes:
            # One row, not zero: a file without any valid row fails on PostgreSQL (an empty
            # IN list in mailer/store/subscribers.py::_seen_before); see README.md.
            empty_path, empty = cached_csv(OUT / "data", 1, seed=options.seed, error_percent=0)
            for backend in options.backends:
                log(f"{backend}: one-row import (fixed cost)")
                baselines[backend] = Result(backend, 0, [
                    import_once(options, backend, empty_path, empty, profile=None)
                ])  # fmt: skip
        for rows in options.sizes:
            log(f"generating {rows:,} rows (cached in {OUT / 'data'})")
            t0 = time.perf_counter()
            csv_path, expected[rows] = cached_csv(
                OUT / "data", rows, seed=options.seed, error_percent=options.error_percent
            )
            log(f"  {csv_path.name}: {expected[rows]} ({time.perf_counter() - t0:.1f} s)")
            for _ in range(options.repeat):
                for kind in (*["csv"] * CEILING_RUNS, *options.backends):
                    log(f"{kind}: {rows:,} rows ...")
                    if kind == "csv":
                        run = ceiling_once(options, csv_path, expected[rows])
                    else:
                        run = import_once(options, kind, csv_path, expected[rows], profile=None)
                    results.setdefault((kind, rows), Result(kind, rows)).runs.append(run)
                    log(
                        f"  {run.wall_s:.2f} s, {run.rows_per_s:,.0f} rows/s,"
                        f" CPU {run.cpu_s:.1f} s, peak RSS {run.max_rss_mib:.1f} MiB"
                    )
        profile_text = profile(options, options.profile) if options.profile else None
    except BenchmarkError as exc:
        log(f"benchmark failed: {exc}")
        return 1
    if results:
        frozen = options.snapshot is not None
        source = (commit, source_at_start, source_at_start if frozen else fingerprint())
        markdown = render(results, baselines, expected, options, started, source)
        sys.stdout.write(markdown)
        stamp = f"{started:%Y%m%dT%H%M%S}"
        (OUT / f"results-{stamp}.md").write_text(markdown, encoding="utf-8")
        raw = {
            "started": started.isoformat(),
            "options": {k: str(v) for k, v in asdict(options).items()},
            "results": [
                {**asdict(r), "wall_s_best": r.wall_s, "rows_per_s": r.rows_per_s}
                for r in results.values()
            ],
            "baselines": [asdict(r) for r in baselines.values()],
            "expected": [asdict(e) for e in expected.values()],
        }
        (OUT / f"results-{stamp}.json").write_text(json.dumps(raw, indent=2), encoding="utf-8")
    if profile_text:
        sys.stdout.write("\n" + profile_text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
