"""Shared helpers for the benchmarks: deterministic CSV generation and child-process measurement.

Nothing here imports mailer: the benchmarks drive the real `mailer` command as a subprocess
and judge it only by what it prints and what it leaves in the database.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import threading
import time
import unicodedata
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# Bump when the generator's output changes, so cached files are regenerated.
GENERATOR_VERSION = 1
HEADER = ("Civilité", "Prénom", "Nom", "Adresse e-mail", "Téléphone")
ENCODING = "cp1252"
DELIMITER = ";"

# --- child process measurement ------------------------------------------------------------


@dataclass(frozen=True)
class Measurement:
    """One finished child process: wall time, CPU time and peak RSS of exactly that process."""

    argv: list[str]
    returncode: int
    wall_s: float
    user_s: float
    sys_s: float
    max_rss_kib: int  # ru_maxrss of the child (Linux: KiB)
    stdout_path: Path
    stderr_path: Path
    machine_busy_s: float  # CPU seconds used by every process on the machine meanwhile

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s

    @property
    def max_rss_mib(self) -> float:
        return self.max_rss_kib / 1024

    def stdout(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8")

    def stderr_tail(self, lines: int = 20) -> str:
        text = self.stderr_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores; /proc/stat)."""
    with open("/proc/stat", encoding="ascii") as handle:
        fields = [int(value) for value in handle.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # guest time is already counted in user time
    return busy / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int, *, expect_name: str | None = None) -> float | None:
    """User + system CPU seconds of a running process (another user's included), or None.

    With `expect_name`, None too unless the process's command name is that.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            stat = handle.read()
    except OSError:
        return None
    head, _, rest = stat.rpartition(")")  # the command name may hold spaces or parentheses
    if expect_name is not None and head.partition("(")[2] != expect_name:
        return None
    fields = rest.split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def parse_counts(text: str) -> list[int]:
    """`100000,1_000_000` -> sorted distinct positive counts (0 drops out: "none")."""
    try:
        counts = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"invalid counts {text!r}: {exc}") from exc
    if any(count < 0 for count in counts):
        raise argparse.ArgumentTypeError("counts must be >= 0")
    return sorted({count for count in counts if count > 0})


def parse_choices(text: str, choices: Sequence[str], what: str) -> list[str]:
    """`a,b` -> those of `choices`, in the order of `choices`; an unknown one is an error."""
    given = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [part for part in given if part not in choices]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {unknown}; choose from {', '.join(choices)}"
        )
    return [choice for choice in choices if choice in given]


def clean_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The current environment without any MAILER_* setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(extra or {})
    return env


def run_measured(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    stdout_path: Path,
    stderr_path: Path,
) -> Measurement:
    """Run `argv` to completion; its wall time and its own rusage (os.wait4)."""
    (measured,) = run_processes([argv], cwd=cwd, env=env, paths=[(stdout_path, stderr_path)])
    return measured


def run_processes(
    argvs: Sequence[Sequence[str]],
    *,
    cwd: Path,
    env: Mapping[str, str],
    paths: Sequence[tuple[Path, Path]],
    timeout: float | None = None,
) -> list[Measurement]:
    """Start every argv at once; wait for all; each one's own wall time, CPU and peak RSS.

    A thread per child calls os.wait4 on its pid (never on "any child": the caller may have
    others, a server say). Output goes to the files in `paths` (a pipe could fill up and
    block a child while we wait). A child still running after `timeout` seconds is killed
    and TimeoutError raised; so is every child if we are interrupted.
    """
    processes: list[subprocess.Popen[bytes]] = []
    reaped: list[tuple[int, Any, float] | None] = [None] * len(argvs)
    busy_before = machine_busy_seconds()
    started = time.perf_counter()
    try:
        for argv, (out_path, err_path) in zip(argvs, paths, strict=True):
            with out_path.open("wb") as out, err_path.open("wb") as err:
                processes.append(subprocess.Popen(
                    list(argv), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=out,
                    stderr=err,
                ))

        def reap(number: int, process: subprocess.Popen[bytes]) -> None:
            _pid, status, usage = os.wait4(process.pid, 0)
            reaped[number] = (status, usage, time.perf_counter())
            process.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait again

        threads = [
            threading.Thread(target=reap, args=(number, process), daemon=True)
            for number, process in enumerate(processes)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(None if timeout is None
                        else max(0.0, started + timeout - time.perf_counter()))
        if any(thread.is_alive() for thread in threads):
            raise TimeoutError(f"still running after {timeout:.0f} s; killed")
    finally:
        for process in processes:
            if process.returncode is None:  # not reaped: still ours to kill
                process.kill()
        for process in processes:
            if process.returncode is None:
                process.wait()
    busy = machine_busy_seconds() - busy_before
    measurements = []
    for argv, (out_path, err_path), found in zip(argvs, paths, reaped, strict=True):
        assert found is not None
        status, usage, ended = found
        measurements.append(Measurement(
            argv=list(argv),
            returncode=os.waitstatus_to_exitcode(status),
            wall_s=ended - started,
            user_s=usage.ru_utime,
            sys_s=usage.ru_stime,
            max_rss_kib=usage.ru_maxrss,
            stdout_path=out_path,
            stderr_path=err_path,
            machine_busy_s=busy,
        ))
    return measurements


# --- deterministic French-Excel-like CSV ----------------------------------------------------

_WOMEN = (
    "Hélène", "Léa", "Chloé", "Zoé", "Anaïs", "Maëlle", "Céline", "Émilie", "Françoise",
    "Géraldine", "Mélanie", "Noémie", "Agnès", "Bérénice", "Clémence", "Inès", "Joëlle",
    "Thérèse", "Valérie", "Sévérine", "Marie-Hélène", "Anne-Sophie", "Marie", "Camille",
    "Julie", "Sophie", "Nathalie", "Isabelle", "Sandrine", "Aurélie", "Laëtitia", "Maïté",
    "Gaëlle", "Solène", "Eléonore", "Josée", "Cécile", "Océane", "Lucie", "Manon",
)  # fmt: skip
_MEN = (
    "Jérôme", "Benoît", "François", "Frédéric", "Stéphane", "Sébastien", "Jérémy", "Noël",
    "Maël", "Loïc", "Gaël", "Raphaël", "Grégoire", "Hervé", "Rémi", "Thibaut", "Cédric",
    "Aurélien", "Jean-Pierre", "Jean-François", "Pierre", "Nicolas", "Julien", "Thomas",
    "Antoine", "Mathieu", "Olivier", "Laurent", "Éric", "Yannick", "Joël", "Clément",
    "Anthony", "Bruno", "Hugo", "Lucas", "Théo", "André", "René", "Gérard",
)  # fmt: skip
_LAST = (
    "Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy",
    "Moreau", "Simon", "Laurent", "Lefèvre", "Michel", "Garcia", "David", "Bertrand", "Roux",
    "Vincent", "Fournier", "Morel", "Girard", "André", "Lefèbvre", "Mercier", "Dupont",
    "Lambert", "Bonnet", "François", "Martinez", "Legrand", "Garnier", "Faure", "Rousseau",
    "Blanc", "Guérin", "Müller", "Henry", "Roussel", "Nicolas", "Perrin", "Morin", "Mathieu",
    "Clément", "Gauthier", "Dumont", "Lopez", "Fontaine", "Chevalier", "Robin", "Masson",
    "Sanchez", "Gérard", "Nguyen", "Boyer", "Denis", "Lemaire", "Duval", "Joly", "Gautier",
    "Roger", "Roche", "Roy", "Noël", "Meyer", "Lucas", "Meunier", "Jean", "Pérez", "Marchand",
    "Dufour", "Blanchard", "Barbier", "Brun", "Dumas", "Brunet", "Schmitt", "Leroux", "Colin",
    "Fernandez", "Lemaître", "Bérard", "Ménard", "Cœur", "Le Goff", "Le Bihan", "N'Diaye",
    "de la Fontaine", "Bénard", "Hébert", "Séguin", "Prévost", "Thévenin", "Pâris", "Lévêque",
    "Béranger", "Désiré", "Aubépin", "Jégou", "Sœur",
)  # fmt: skip
# (domain, weight): big French and international providers, then smaller and corporate ones.
_DOMAINS = (
    ("gmail.com", 30), ("orange.fr", 14), ("hotmail.fr", 8), ("yahoo.fr", 6), ("free.fr", 6),
    ("wanadoo.fr", 5), ("sfr.fr", 4), ("laposte.net", 4), ("outlook.fr", 3), ("hotmail.com", 3),
    ("live.fr", 2), ("icloud.com", 2), ("outlook.com", 2), ("neuf.fr", 1), ("bbox.fr", 1),
    ("aliceadsl.fr", 1), ("club-internet.fr", 1), ("numericable.fr", 1), ("gmx.fr", 1),
    ("protonmail.com", 1), ("proton.me", 1), ("me.com", 1), ("mailo.com", 1), ("yahoo.com", 1),
    ("ac-lyon.fr", 1), ("univ-lille.fr", 1), ("mairie-rennes.fr", 1), ("chu-toulouse.fr", 1),
    ("credit-agricole.fr", 1), ("sncf.fr", 1), ("crêperie-bretonne.fr", 1),
    ("société-exemple.fr", 1),
)  # fmt: skip
_UPPER_DOMAINS = {
    "gmail.com": "GMAIL.COM",
    "orange.fr": "Orange.fr",
    "hotmail.fr": "Hotmail.FR",
    "wanadoo.fr": "WANADOO.FR",
    "free.fr": "Free.fr",
    "laposte.net": "LaPoste.net",
}
# Each is rejected by mailer; {l} is a local part, {d} a domain, {h} a domain without its TLD.
_INVALID = (
    "{l}@{h}",  # no dot in the domain
    "{l}.{d}",  # no @-sign
    "{l}@@{d}",
    "{l}..x@{d}",
    "",  # empty cell
    "@{d}",
    "{l}@",
    "{l}@{d},com",
    "{l}@{d}; autre.{l}@{d}",  # two addresses in one cell (the ; makes Excel quote it)
    ".{l}@{d}",
    "{l} {l}@{d}",  # space
    "{l}(at){d}",
)
_ASCII_FOLD = str.maketrans({"œ": "oe", "Œ": "Oe", "æ": "ae", "Æ": "Ae", " ": "", "'": ""})


@dataclass(frozen=True)
class Expected:
    """What mailer must report for a generated file imported into an empty database."""

    rows: int
    invalid: int
    duplicates: int
    imported: int
    seed: int
    size_bytes: int
    generator_version: int = GENERATOR_VERSION


def _ascii(name: str) -> str:
    decomposed = unicodedata.normalize("NFKD", name.translate(_ASCII_FOLD))
    return decomposed.encode("ascii", "ignore").decode("ascii").lower()


def _invalid_address(rng: random.Random, local: str, domain: str) -> str:
    pattern = _INVALID[rng.randrange(len(_INVALID))]
    return pattern.format(l=local, d=domain, h=domain.split(".")[0])


def _phone(rng: random.Random) -> str:
    digits = f"{rng.choice('67')}{rng.randrange(10**8):08d}"
    style = rng.random()
    if style < 0.15:
        return ""
    if style < 0.45:
        return "0" + " ".join([digits[0], *(digits[i : i + 2] for i in range(1, 9, 2))])
    if style < 0.65:
        return digits  # Excel dropped the leading zero of a number cell
    if style < 0.8:
        return "+33 " + " ".join([digits[0], *(digits[i : i + 2] for i in range(1, 9, 2))])
    return "0" + digits


def generate_csv(
    path: Path,
    rows: int,
    *,
    seed: int = 20240601,
    invalid_rate: float = 0.01,
    duplicate_rate: float = 0.01,
) -> Expected:
    """Write a French-Excel-like export (cp1252, `;`, CRLF) of `rows` data rows, streamed.

    About `invalid_rate` of rows have an invalid address and about `duplicate_rate` repeat an
    earlier address (often with other case or spaces); every other address is unique (a
    serial number in the local part). Returns the exact counts mailer must report.
    """
    rng = random.Random(seed)
    domains = [d for d, _ in _DOMAINS]
    weights = [w for _, w in _DOMAINS]
    folded: dict[str, str] = {}
    recent: deque[str] = deque(maxlen=3000)  # duplicates within a batch or the one before
    older: list[str] = []  # a sparse sample of the whole file so far (N/97 addresses)
    invalid = duplicates = serial = 0
    tmp = path.with_suffix(path.suffix + ".part")
    with tmp.open("w", encoding=ENCODING, newline="") as handle:
        writer = csv.writer(handle, delimiter=DELIMITER, lineterminator="\r\n")
        writer.writerow(HEADER)
        chunk: list[tuple[str, str, str, str, str]] = []
        for _ in range(rows):
            woman = rng.random() < 0.52
            first = rng.choice(_WOMEN if woman else _MEN)
            last = rng.choice(_LAST)
            civility = rng.choices(
                ("Mme", "Mlle", "Madame", "") if woman else ("M.", "Monsieur", ""),
                (70, 5, 10, 15) if woman else (75, 10, 15),
            )[0]
            shown_last = last.upper() if rng.random() < 0.25 else last
            fa = folded.get(first) or folded.setdefault(first, _ascii(first))
            la = folded.get(last) or folded.setdefault(last, _ascii(last))
            roll = rng.random()
            if roll < invalid_rate:
                invalid += 1
                domain = rng.choices(domains, weights)[0]
                email = _invalid_address(rng, f"{fa}.{la}", domain)
            elif roll < invalid_rate + duplicate_rate and recent:
                duplicates += 1
                pool = recent if rng.random() < 0.7 or not older else older
                email = pool[rng.randrange(len(pool))]
                variant = rng.random()
                if variant < 0.3 and email.isascii():
                    email = email.upper()
                elif variant < 0.5:
                    email = f" {email} "
            else:
                serial += 1
                domain = rng.choices(domains, weights)[0]
                style = rng.randrange(5)
                if style == 0:
                    local = f"{fa}.{la}{serial}"
                elif style == 1:
                    local = f"{fa[0]}{la}{serial}"
                elif style == 2:
                    local = f"{la}.{fa}.{serial}"
                elif style == 3:
                    local = f"{fa}_{la}{serial}"
                else:
                    local = f"{fa}{serial}"
                if rng.random() < 0.04:
                    local = local.title()
                if domain in _UPPER_DOMAINS and rng.random() < 0.05:
                    domain = _UPPER_DOMAINS[domain]
                email = f"{local}@{domain}"
                recent.append(email)
                if serial % 97 == 0:
                    older.append(email)
            chunk.append((civility, first, shown_last, email, _phone(rng)))
            if len(chunk) >= 10_000:
                writer.writerows(chunk)
                chunk.clear()
        writer.writerows(chunk)
    tmp.replace(path)
    return Expected(
        rows=rows,
        invalid=invalid,
        duplicates=duplicates,
        imported=rows - invalid - duplicates,
        seed=seed,
        size_bytes=path.stat().st_size,
    )


def cached_csv(
    folder: Path, rows: int, *, seed: int = 20240601, error_percent: float = 1.0
) -> tuple[Path, Expected]:
    """The generated file for these parameters, made once and reused while the generator is
    unchanged; `error_percent` % of rows are invalid and as many are duplicates.

    A sidecar JSON file holds the expected counts.
    """
    folder.mkdir(parents=True, exist_ok=True)
    name = f"subscribers-{rows}-s{seed}-e{error_percent:g}-v{GENERATOR_VERSION}.csv"
    path = folder / name
    sidecar = path.with_suffix(".json")
    if path.exists() and sidecar.exists():
        data = json.loads(sidecar.read_text(encoding="utf-8"))
        expected = Expected(**data)
        if expected.size_bytes == path.stat().st_size:
            return path, expected
    rate = error_percent / 100
    expected = generate_csv(path, rows, seed=seed, invalid_rate=rate, duplicate_rate=rate)
    sidecar.write_text(json.dumps(asdict(expected), indent=2) + "\n", encoding="utf-8")
    return path, expected
