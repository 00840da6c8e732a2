"""Benchmark rendering the closure notice to bytes: the reference construction against mailer's.

For N generated French subscribers (deterministic, seeded), in one process and interleaved in
chunks, it times:

- reference: the token and Message-ID, Jinja rendering (`factory.renderer.render`), then
  `mailer.messages.reference.build_message(...).as_bytes()`, the standard library's EmailMessage;
- mailer: `factory.make(recipient, date=DATE).data`, Jinja rendering and `mailer.messages.compose`;
- composition alone, on pre-rendered parts: `composer.reference(...)` (timed inside the
  reference loop above) against `composer.compose(...)`, and Jinja alone (a second pass);
- the stages of mailer's rendering once per campaign (the same second pass): the campaign's
  skeleton (`factory.render(...)`: the holes per subscriber and the bodies encoded around
  the static stretches) and composition with those bodies;
- before and after it, in a third pass, interleaved in chunks: `factory.make` against the
  same factory rendering the plain way (`MessageFactory(..., fast=False)`: Jinja2 on the whole
  templates, the bodies encoded whole), and the pre-flight (`messages.preflight.preflight`)
  per message both ways.

Every subscriber's fast bytes must equal the reference bytes (same Message-ID and date); any
difference is printed with the subscriber that causes it, and the exit status is 1. Memory,
measured first: a child process streams 10,000 then 100,000 generated subscribers through the
fast path (a generator, never a list) and reports its peak RSS after each.

    .venv/bin/python benchmarks/render_bench.py                   # 10,000 subscribers, ~1.5 min
    .venv/bin/python benchmarks/render_bench.py --count 2000 --memory-sizes 0     # quick check
    .venv/bin/python benchmarks/render_bench.py --memory-sizes 10000,100000,1000000
    .venv/bin/python benchmarks/render_bench.py --snapshot       # on a copy of mailer/ taken now

Markdown goes to standard output, progress to standard error. Exit status: 0 when every
subscriber's fast bytes equal the reference's; 1 when any differ (or only one path raises);
2 when some subscribers are refused by both paths (their message cannot be built at all).
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import os
import platform
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from statistics import median
from typing import Any

import jinja2
from _measure import machine_busy_seconds, parse_counts

import mailer
from mailer.core.addresses import clean_address
from mailer.core.config import Settings
from mailer.core.people import Recipient
from mailer.messages.campaign import load_campaign
from mailer.messages.factory import MessageFactory
from mailer.messages.preflight import preflight
from mailer.messages.reference import Envelope, build_message

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT_ENV = "RENDER_BENCH_SNAPSHOT"  # set by --snapshot: the folder of the frozen copy
CAMPAIGN = "closure-notice"
SECRET = b"k" * 32
NONCE = "bench0000000"
DATE = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)  # the same Date header for both paths
DEFAULT_COUNT = 10_000
DEFAULT_MEMORY_SIZES = (10_000, 100_000)
DEFAULT_SEED = 20261126
WARMUP_SEED = 1  # warm-up subscribers differ from the measured ones
QP_CACHE_LINES = 8192  # mailer.messages.compose.qp_line's lru_cache: see compose_alone()
DIGEST = 16

# --- generated subscribers ------------------------------------------------------------------

_WOMEN = (
    "Hélène", "Zoë", "Anaïs", "Émilie", "Cécile", "Marie", "Sophie", "Camille", "Chloé", "Léa",
    "Maëlle", "Agnès", "Françoise", "Marie-Hélène", "Anne-Sophie", "Julie", "Nathalie",
    "Isabelle", "Lucie", "Manon", "Inès", "Noémie", "Bérénice", "Océane", "Joëlle", "Laëtitia",
)  # fmt: skip
_MEN = (
    "François", "Jérôme", "Loïc", "Benoît", "Jean", "Pierre", "Thomas", "Nicolas", "Jean-Pierre",
    "Jean-François", "Stéphane", "Sébastien", "Noël", "Raphaël", "Hervé", "Olivier", "Laurent",
    "Julien", "Antoine", "Hugo", "Lucas", "Théo", "André", "Gaël", "Éric", "Yannick",
)  # fmt: skip
_LAST = (
    "Dupont", "Lefèvre", "Œuvray", "Müller", "N'Diaye", "Garçon", "Rivière", "Martin",
    "Bernard", "Petit", "Durand", "Le Gall", "Dupont-Aignan", "Dubois", "Moreau", "Simon",
    "Michel", "Leroy", "Roux", "David", "Bertrand", "Morel", "Fournier", "Girard", "Bonnet",
    "Lambert", "Fontaine", "Rousseau", "Vincent", "Mercier", "Guérin", "Boyer", "Garnier",
    "Chevalier", "François", "Legrand", "Gauthier", "Perrin", "Robin", "Clément", "Morin",
    "Nicolas", "Henry", "Roussel", "Mathieu", "Masson", "Nguyen", "Lemaître", "Hébert",
    "Prévost", "Lévêque", "Le Goff", "Le Bihan", "de la Fontaine", "d'Arc", "Cœur", "Pâris",
    "Jégou", "Bénard", "Laurent", "Thévenin", "Lefebvre",
)  # fmt: skip
# (domain as people type it, weight); the IDN ones are sent as A-labels (xn--…).
_DOMAINS = (
    ("gmail.com", 28), ("orange.fr", 14), ("free.fr", 7), ("hotmail.fr", 7), ("wanadoo.fr", 6),
    ("laposte.net", 5), ("yahoo.fr", 5), ("sfr.fr", 4), ("exemple.fr", 3), ("outlook.fr", 3),
    ("icloud.com", 2), ("protonmail.com", 1), ("neuf.fr", 1), ("univ-lille.fr", 1),
    ("mairie-rennes.fr", 1), ("ac-lyon.fr", 1), ("bücher.de", 1), ("crêperie-bretonne.fr", 1),
    ("société-exemple.fr", 1),
)  # fmt: skip
_CITIES = ("Paris", "Lyon", "Lille", "Rennes", "Nantes", "Bordeaux", "Saint-Étienne")
_NOT_LOCAL = re.compile(r"[^a-z0-9'-]+")


def _ascii(name: str) -> str:
    """`Œuvray` -> `oeuvray`, `Le Gall` -> `legall`: what people put in their addresses."""
    name = name.replace("œ", "oe").replace("Œ", "Oe")
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    return _NOT_LOCAL.sub("", folded)


def generate(
    count: int, seed: int = DEFAULT_SEED, *, smtputf8_rate: float = 0.001
) -> Iterator[Recipient]:
    """`count` realistic subscribers of a French list, one at a time, always the same ones.

    Civility (Mme, M., Mlle, written out, or none), first and last names with and without
    accents (a fifth of the last names in capitals, some double-barrelled, a few with a
    parenthesis), ~5 % without any name, ~5 % first name only, ~3 % last name only; unique
    addresses over weighted domains (IDN ones included, some capitals as typed), and about
    `smtputf8_rate` with a non-ASCII local part. Ids are distinct and increasing, with gaps.
    """
    rng = random.Random(seed)
    domains = [d for d, _ in _DOMAINS]
    weights = [w for _, w in _DOMAINS]
    accented = [name for name in (*_WOMEN, *_MEN) if not name.isascii()]
    subscriber_id = 0
    for serial in range(1, count + 1):
        subscriber_id += 1 + (rng.random() < 0.1) * rng.randrange(1, 5)  # deleted rows
        woman = rng.random() < 0.52
        given = rng.choice(_WOMEN if woman else _MEN)
        family = rng.choice(_LAST)
        roll = rng.random()
        if roll < 0.01:
            family = f"{family}-{rng.choice(_LAST)}"  # double-barrelled
        elif roll < 0.013:
            family = f"{family} (née {rng.choice(_LAST)})"  # typed into the field as is
        if rng.random() < 0.2:
            family = family.upper()
        civility: str | None = rng.choices(
            ("Mme", "Mlle", "Madame", "") if woman else ("M.", "Monsieur", ""),
            (60, 5, 5, 30) if woman else (65, 5, 30),
        )[0]
        first: str | None = given
        last: str | None = family
        fa, la = _ascii(given), _ascii(family)
        local = (
            f"{fa}.{la}{serial}",
            f"{fa[0]}{la}{serial}",
            f"{la}.{fa}.{serial}",
            f"{fa}_{la}{serial}",
            f"{fa}{serial}",
        )[rng.randrange(5)]
        shape = rng.random()
        if shape < 0.05:
            first = last = civility = None
            local = rng.choice(("contact", "info", "asso", "famille")) + str(serial)
        elif shape < 0.10:
            last = None
        elif shape < 0.13:
            first = None
        if rng.random() < smtputf8_rate:
            local = f"{rng.choice(accented).lower()}.{serial}"  # needs SMTPUTF8
        elif rng.random() < 0.04:
            local = local.title()
        domain = rng.choices(domains, weights)[0]
        if rng.random() < 0.03:
            domain = domain.capitalize()
        address, _ = clean_address(f"{local}@{domain}")
        yield Recipient(
            id=subscriber_id,
            email=address.email,
            address=address.address,
            key=address.key,
            smtputf8=address.smtputf8,
            first_name=first,
            last_name=last,
            civility=civility or None,
            attributes={"ville": rng.choice(_CITIES)} if rng.random() < 0.1 else {},
        )


def chunks(items: Iterator[Recipient], size: int) -> Iterator[list[Recipient]]:
    while chunk := list(islice(items, size)):
        yield chunk


# --- measuring ------------------------------------------------------------------------------


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def make_factory() -> MessageFactory:
    campaign = load_campaign(Settings(templates_dir=sources()[1]), CAMPAIGN)
    factory = MessageFactory(campaign, secret=SECRET, nonce=NONCE)
    FACTORY_PARTS[0] = skeleton_parts(factory)
    if not factory.composer.fast:
        raise SystemExit(
            "mailer.messages.compose.Composer disabled its fast path (its self-check failed): "
            "there is nothing to compare"
        )
    return factory


def reference_bytes(factory: MessageFactory, recipient: Recipient) -> bytes:
    links = factory.links(recipient)
    parts = factory.renderer.render(recipient, links)
    envelope = Envelope(factory.message_id(recipient), DATE)
    return build_message(factory.campaign, recipient, parts, links, envelope).as_bytes()


def warm_up(factory: MessageFactory, count: int, *, reference: bool = True) -> None:
    """Both paths on other subscribers: imports, compiled regexes, the shared caches."""
    for recipient in generate(count, WARMUP_SEED, smtputf8_rate=0):
        factory.make(recipient, date=DATE)
        if reference:
            reference_bytes(factory, recipient)


def digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=DIGEST).digest()


def rss_mib() -> dict[str, float]:
    """This process's memory, MiB: peak (VmHWM), ru_maxrss, current (VmRSS).

    VmHWM is the peak of this process image alone. ru_maxrss is too, except in a child
    process: Linux carries the parent's peak over fork and exec (a child of a 300 MiB
    process reports at least 300 MiB), hence the memory run is started first.
    """
    found = {"maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(("VmHWM:", "VmRSS:")):
                key = "peak" if line.startswith("VmHWM") else "current"
                found[key] = int(line.split()[1]) / 1024  # kB
    return found


Outcome = bytes | str  # a message's bytes, or the error that refused it ("Type: message")
REFUSED = bytes(DIGEST)  # the digest recorded for a subscriber the reference refused


def failure(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


@dataclass
class Mismatch:
    path: str  # which fast construction differed: make() or compose()
    recipient: Recipient
    fast: Outcome
    reference: Outcome


@dataclass
class Totals:
    """Seconds spent per step, summed over the subscribers both paths built."""

    count: int = 0  # subscribers compared
    built: int = 0  # ... whose message both paths built (the timings are theirs)
    make: float = 0.0  # factory.make(...).data
    prepare: float = 0.0  # reference: token + Message-ID
    render: float = 0.0  # reference: Jinja
    build: float = 0.0  # reference: build_message(...).as_bytes()
    # The second pass (compose_alone): the steps of make(), one by one.
    compose: float = 0.0  # composer.compose(...) on pre-rendered parts
    compose_count: int = 0
    prepare_alone: float = 0.0  # token + Message-ID
    compose_folded: float = 0.0  # ... of which messages whose To header is folded
    compose_folded_count: int = 0
    render_alone: float = 0.0  # Jinja
    skeleton: float = 0.0  # factory.render(...): the skeleton's parts and bodies
    compose_bodies: float = 0.0  # composer.compose(..., bodies=...) with the skeleton's bodies
    # The third pass (before_after): make() and the pre-flight, both ways.
    stages_count: int = 0
    make_fast: float = 0.0
    make_plain: float = 0.0  # MessageFactory(..., fast=False).make(...)
    preflight_fast: float = 0.0
    preflight_plain: float = 0.0
    fallbacks: int = 0  # subscribers the skeleton left to the plain way
    chunk_ratios: list[float] = field(default_factory=list)
    smtputf8: int = 0
    no_name: int = 0
    encoded_name: int = 0  # a display name with non-ASCII letters: an encoded word in To
    idn: int = 0
    to_folded: int = 0  # a To header on more than one line
    message_bytes: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    mismatch_count: int = 0
    refused: list[tuple[Recipient, str, str]] = field(default_factory=list)  # by both paths
    refused_count: int = 0

    @property
    def reference(self) -> float:
        return self.prepare + self.render + self.build


def to_header_lines(data: bytes) -> int:
    start = data.index(b"\r\nTo:") + 2
    lines = 1
    position = data.index(b"\r\n", start)
    while data[position + 2 : position + 3] in (b" ", b"\t"):
        lines += 1
        position = data.index(b"\r\n", position + 2)
    return lines


def note_mismatch(
    totals: Totals, path: str, recipient: Recipient, fast: Outcome, ref: Outcome
) -> None:
    totals.mismatch_count += 1
    if len(totals.mismatches) < 20:
        totals.mismatches.append(Mismatch(path, recipient, fast, ref))
    log(f"  MISMATCH ({path}) for {recipient!r}")


def note_refused(totals: Totals, recipient: Recipient, fast: str, ref: str) -> None:
    totals.refused_count += 1
    if len(totals.refused) < 20:
        totals.refused.append((recipient, fast, ref))
    log(f"  refused by both paths: {recipient.email!r}: {ref}")


def run_fast(
    factory: MessageFactory, chunk: list[Recipient], totals: Totals
) -> list[tuple[Outcome, float]]:
    clock = time.perf_counter
    out: list[tuple[Outcome, float]] = []
    for recipient in chunk:
        t0 = clock()
        try:
            data: Outcome = factory.make(recipient, date=DATE).data
        except Exception as exc:
            data = failure(exc)
        out.append((data, clock() - t0))
    return out


def run_reference(
    factory: MessageFactory, chunk: list[Recipient]
) -> list[tuple[Outcome, tuple[float, float, float]]]:
    clock = time.perf_counter
    campaign = factory.campaign
    out: list[tuple[Outcome, tuple[float, float, float]]] = []
    for recipient in chunk:
        t0 = clock()
        links = factory.links(recipient)
        envelope = Envelope(factory.message_id(recipient), DATE)
        t1 = clock()
        parts = factory.renderer.render(recipient, links)
        t2 = clock()
        try:
            data: Outcome = build_message(campaign, recipient, parts, links, envelope).as_bytes()
        except Exception as exc:
            data = failure(exc)
        t3 = clock()
        out.append((data, (t1 - t0, t2 - t1, t3 - t2)))
    return out


def compare_paths(
    factory: MessageFactory, count: int, seed: int, chunk_size: int, totals: Totals
) -> bytearray:
    """Both full paths over the same subscribers, chunk by chunk, alternating which goes first.

    Only subscribers both paths build count in the timings. Returns the reference bytes'
    digests (REFUSED where the reference raised), for compose_alone().
    """
    digests = bytearray()
    started = time.perf_counter()
    for index, chunk in enumerate(chunks(generate(count, seed), chunk_size)):
        if index % 2 == 0:
            fast = run_fast(factory, chunk, totals)
            ref = run_reference(factory, chunk)
        else:
            ref = run_reference(factory, chunk)
            fast = run_fast(factory, chunk, totals)
        make_s = reference_s = 0.0
        for recipient, (fast_data, fast_s), (ref_data, steps) in zip(chunk, fast, ref, strict=True):
            totals.count += 1
            totals.smtputf8 += recipient.smtputf8
            digests += REFUSED if isinstance(ref_data, str) else digest(ref_data)
            if isinstance(fast_data, str) and isinstance(ref_data, str):
                note_refused(totals, recipient, fast_data, ref_data)
                continue
            if fast_data != ref_data:
                note_mismatch(totals, "make", recipient, fast_data, ref_data)
            if isinstance(fast_data, str) or isinstance(ref_data, str):
                continue
            totals.built += 1
            totals.make += fast_s
            totals.prepare += steps[0]
            totals.render += steps[1]
            totals.build += steps[2]
            make_s += fast_s
            reference_s += sum(steps)
            totals.message_bytes += len(ref_data)
            totals.idn += "xn--" in recipient.address
            name = recipient.display_name
            totals.no_name += not name
            totals.encoded_name += not name.isascii()
            totals.to_folded += to_header_lines(ref_data) > 1
        if make_s:
            totals.chunk_ratios.append(reference_s / make_s)
        if (index % max(1, 1000 // chunk_size) == 0 or totals.count == count) and totals.built:
            log(
                f"  {totals.count:,}/{count:,} subscribers, {time.perf_counter() - started:.0f} s"
                f" (reference {totals.reference / totals.built * 1e6:,.0f} µs/msg,"
                f" mailer {totals.make / totals.built * 1e6:,.0f} µs/msg,"
                f" mismatches {totals.mismatch_count}, refused by both {totals.refused_count})"
            )
    return digests


def compose_alone(
    factory: MessageFactory, count: int, seed: int, digests: bytearray, totals: Totals
) -> None:
    """`composer.compose` on pre-rendered parts, the same subscribers again, checked.

    The steps of make() are timed one by one here: token and Message-ID, Jinja, composition
    (in the reference loop, Jinja is slower: build_message's garbage and cache misses in
    between).

    Its own pass, after compare_paths(): mailer.messages.compose remembers the last 8,192
    encoded body lines, and a message has about three of its own (the address, the unsubscribe
    links). Run right after make() on the same subscriber, compose() would find them remembered
    and look faster than it is; here `count` other messages came in between.
    """
    clock = time.perf_counter
    composer = factory.composer
    for index, recipient in enumerate(generate(count, seed)):
        expected = bytes(digests[index * DIGEST : (index + 1) * DIGEST])
        t0 = clock()
        links = factory.links(recipient)
        envelope = Envelope(factory.message_id(recipient), DATE)
        t1 = clock()
        parts = factory.renderer.render(recipient, links)
        t2 = clock()
        try:
            data = composer.compose(recipient, parts, links, envelope)
        except Exception as exc:
            if expected != REFUSED:  # the reference built it
                note_mismatch(totals, "compose", recipient, failure(exc), b"(see make())")
            continue
        spent = clock() - t2
        if expected == REFUSED:
            note_mismatch(totals, "compose", recipient, data, "the reference refused it")
            continue
        if digest(data) != expected:
            note_mismatch(totals, "compose", recipient, data, reference_bytes(factory, recipient))
            continue
        t3 = clock()
        rendered = factory.render(recipient, links)
        t4 = clock()
        with_bodies = composer.compose(recipient, rendered.parts, links, envelope,
                                       bodies=rendered.bodies)
        t5 = clock()
        if with_bodies != data:
            note_mismatch(totals, "skeleton", recipient, with_bodies, data)
            continue
        totals.skeleton += t4 - t3
        totals.compose_bodies += t5 - t4
        totals.compose += spent
        if to_header_lines(data) > 1:
            totals.compose_folded += spent
            totals.compose_folded_count += 1
        totals.prepare_alone += t1 - t0
        totals.render_alone += t2 - t1
        totals.compose_count += 1


def before_after(
    factory: MessageFactory, count: int, seed: int, chunk_size: int, totals: Totals
) -> None:
    """`make()` and the pre-flight with the skeleton and the plain way, chunk by chunk on the
    same subscribers, alternating which way goes first; every message compared."""
    plain = MessageFactory(factory.campaign, secret=SECRET, nonce=NONCE, fast=False)
    warm_up(plain, 200, reference=False)
    clock = time.perf_counter
    fallbacks = factory.fallbacks
    for index, chunk in enumerate(chunks(generate(count, seed), chunk_size)):
        for way in ((factory, plain) if index % 2 == 0 else (plain, factory)):
            t0 = clock()
            made = [run_make(way, recipient) for recipient in chunk]
            t1 = clock()
            preflight(way, chunk, date=DATE)
            t2 = clock()
            if way is factory:
                totals.make_fast += t1 - t0
                totals.preflight_fast += t2 - t1
                fast = made
            else:
                totals.make_plain += t1 - t0
                totals.preflight_plain += t2 - t1
                slow = made
        for recipient, one, other in zip(chunk, fast, slow, strict=True):
            if one != other:
                note_mismatch(totals, "make, plain way", recipient, one, other)
        totals.stages_count += len(chunk)
    totals.fallbacks = factory.fallbacks - fallbacks


def run_make(factory: MessageFactory, recipient: Recipient) -> Outcome:
    try:
        return factory.make(recipient, date=DATE).data
    except Exception as exc:
        return failure(exc)


# --- memory: a child process streaming subscribers through the fast path --------------------


def memory_child(sizes: list[int], seed: int) -> int:
    """Print JSON: RSS after set-up and after each size of a streamed fast-path run.

    Only the fast path runs until the last size is measured, so that ru_maxrss is its own
    (the reference's EmailMessage objects would set the peak otherwise); then the sampled
    messages (every 997th, and any refused one) are checked against the reference.
    """
    factory = make_factory()
    warm_up(factory, 200, reference=False)
    points: list[dict[str, Any]] = [{"messages": 0, "seconds": 0.0, **rss_mib()}]
    clock = time.perf_counter
    spent = 0.0
    smtputf8 = refused = 0
    samples: list[tuple[Recipient, Outcome]] = []
    for number, recipient in enumerate(generate(max(sizes), seed), 1):
        smtputf8 += recipient.smtputf8
        t0 = clock()
        try:
            data: Outcome = factory.make(recipient, date=DATE).data
        except Exception as exc:
            data = failure(exc)
            refused += 1
        spent += clock() - t0
        if number % 997 == 0 or isinstance(data, str):
            samples.append((recipient, data if isinstance(data, str) else digest(data)))
        if number in sizes:
            points.append({"messages": number, "seconds": spent, **rss_mib()})
            log(f"  memory run: {number:,} messages, peak RSS {points[-1]['peak']:.1f} MiB")
    mismatched = 0
    for recipient, outcome in samples:
        try:
            ref: Outcome = digest(reference_bytes(factory, recipient))
        except Exception as exc:
            ref = failure(exc)
        if isinstance(outcome, str) != isinstance(ref, str) or (
            isinstance(outcome, bytes) and outcome != ref
        ):
            mismatched += 1
            log(f"  MISMATCH (memory run) for {recipient!r}: mailer {outcome!r}, reference {ref!r}")
    result = {
        "points": points,
        "checked": len(samples),
        "mismatched": mismatched,
        "smtputf8": smtputf8,
        "refused": refused,
        "sources": fingerprint(),
    }
    print(json.dumps(result))
    return 1 if mismatched else 0


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure_memory(sizes: list[int], seed: int) -> dict[str, Any]:
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--memory-child",
        ",".join(map(str, sizes)),
        "--seed",
        str(seed),
    ]
    done = subprocess.run(argv, stdout=subprocess.PIPE, text=True, check=False)
    if not done.stdout.strip():
        raise SystemExit(f"the memory run failed (exit status {done.returncode})")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# --- report ---------------------------------------------------------------------------------


def git(*args: str) -> str:
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # read-only: never refresh the index
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, env=env, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def machine(sources: str) -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "mailer", "templates")
    return (
        f"{model}, {len(os.sched_getaffinity(0))} cores available ({os.cpu_count()} in all),"
        f" {platform.system()} {platform.release()} {platform.machine()};"
        f" Python {platform.python_version()}, Jinja2 {jinja2.__version__};"
        f" mailer at commit `{head}`"
        + (" + uncommitted changes in mailer/ or templates/" if dirty else "")
        + f" (sources {sources})"
    )


def sources() -> tuple[Path, Path]:
    """The mailer package this process imported, and the templates folder it reads."""
    snapshot = os.environ.get(SNAPSHOT_ENV)
    templates = Path(snapshot) / "templates" if snapshot else ROOT / "templates"
    return Path(mailer.__file__).resolve().parent, templates


def fingerprint() -> str:
    """A short hash of mailer/ and the templates this process uses: what was measured."""
    sha = hashlib.sha256()
    for folder in sources():
        for path in sorted(folder.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                name = f"{folder.name}/{path.relative_to(folder)}"
                sha.update(name.encode() + b"\0" + path.read_bytes())
    return sha.hexdigest()[:12]


def run_snapshot(argv: Sequence[str]) -> None:
    """Copy mailer/ and templates/ to a temporary folder and run this benchmark again on them.

    Others may edit mailer/ while the benchmark runs; the memory run's child process imports
    it later than this one. With PYTHONPATH set to the copy, both import the same code (it
    precedes the editable install). The folder is removed at the end of the run.
    """
    folder = Path(tempfile.mkdtemp(prefix="render_bench-"))
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "mailer", folder / "mailer", ignore=ignore)
    shutil.copytree(ROOT / "templates", folder / "templates", ignore=ignore)
    path = os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, SNAPSHOT_ENV: str(folder)}
    log(f"running on a copy of mailer/ and templates/ in {folder}")
    script = str(Path(__file__).resolve())
    os.execve(sys.executable, [sys.executable, script, *argv], env)


def row(label: str, count: int, seconds: float, ratio: str) -> str:
    return (
        f"| {label} | {count:,} | {seconds:.2f} | {count / seconds:,.0f} |"
        f" {seconds / count * 1e6:,.1f} | {ratio} |"
    )


def first_difference(fast: Outcome, ref: Outcome) -> str:
    if isinstance(fast, str) or isinstance(ref, str):
        show = [
            f"reference: {ref if isinstance(ref, str) else f'{len(ref):,} bytes'}",
            f"mailer:    {fast if isinstance(fast, str) else f'{len(fast):,} bytes'}",
        ]
        return "\n".join(show)
    diff = difflib.unified_diff(
        ref.decode("utf-8", "replace").splitlines(),
        fast.decode("utf-8", "replace").splitlines(),
        "reference",
        "mailer",
        n=1,
        lineterm="",
    )
    return "\n".join(islice(diff, 16))


def us(seconds: float, count: int) -> str:
    return f"{seconds / count * 1e6:,.0f} µs" if count else "—"


def percent(part: int, whole: int) -> str:
    return f"{part:,} ({100 * part / whole:.{2 if part and part < whole / 100 else 1}f} %)"


def skeleton_parts(factory: MessageFactory) -> str:
    skeleton = factory.skeleton
    if skeleton is None:
        return "no skeleton: every part is rendered the plain way"
    made = {"subject": skeleton.subject_program, "text": skeleton.text, "HTML": skeleton.html}
    fast = [name for name, part in made.items() if part is not None]
    plain = [f"{name} ({skeleton.reasons.get(name, '')})" for name, part in made.items()
             if part is None]
    return f"the skeleton makes the {', '.join(fast) or 'no part'}" + (
        f"; the plain way: {', '.join(plain)}" if plain else "")


def stages_table(totals: Totals, compose_plain: float) -> list[str]:
    """Rendering once per campaign (issue 15): each stage per message, both ways."""
    n, c = totals.stages_count, totals.compose_count
    if not n or not c:
        return []

    def cell(seconds: float, count: int) -> str:
        return f"{seconds / count * 1e6:,.1f}"

    rows = [
        ("Jinja2 + composition: `factory.make(…)`", totals.make_plain, n, totals.make_fast, n),
        ("the pre-flight, per message: `preflight(factory, …)`", totals.preflight_plain, n,
         totals.preflight_fast, n),
        ("rendering: `renderer.render(…)` / `factory.render(…)` (subject, text, HTML)",
         totals.render_alone, c, totals.skeleton, c),
        ("composition: `composer.compose(…)` (bodies encoded whole / the skeleton's)",
         compose_plain * c, c, totals.compose_bodies, c),
    ]
    lines = [
        "",
        f"Rendering once per campaign ({FACTORY_PARTS[0]}): µs per message, the plain way"
        " (`MessageFactory(…, fast=False)`: Jinja2 on the whole templates, the bodies encoded"
        " whole) against the skeleton's (the static stretches rendered and encoded once, the"
        " holes per subscriber). make() and the pre-flight: a third pass, the two ways"
        " alternating by chunk; rendering and composition: the second pass.",
        "",
        "| stage | plain way µs/msg | skeleton µs/msg | ratio |",
        "|---|---:|---:|---:|",
    ]
    for label, before, b_count, after, a_count in rows:
        ratio = (before / b_count) / (after / a_count) if after else 0.0
        lines.append(f"| {label} | {cell(before, b_count)} | {cell(after, a_count)} |"
                     f" {ratio:.1f}× |")
    lines += [
        "",
        f"Subscribers the skeleton left to the plain way in the third pass: {totals.fallbacks:,}"
        f" (of {n:,}).",
    ]
    return lines


FACTORY_PARTS: list[str] = [""]  # what the skeleton makes, for the report


def report(
    totals: Totals,
    memory: dict[str, Any] | None,
    started: datetime,
    wall: float,
    others: float,
    main_rss: dict[str, float],
    seed: int,
    sources: str,
    frozen: bool,
) -> str:
    n, built = totals.count, totals.built
    now = fingerprint()
    child = memory["sources"] if memory else sources
    changed = (
        f" **mailer/ or templates/ changed during the run ({sources} -> {now}, memory run"
        f" {child}): the results may mix versions.**"
        if sources != now or sources != child
        else ""
    )
    if frozen:
        changed = " Run from a copy of mailer/ and templates/ taken at the start." + changed
    speedup = totals.reference / totals.make
    compose_ref = totals.build / built
    compose_fast = totals.compose / totals.compose_count if totals.compose_count else 0.0
    compose_ratio = f"{compose_ref / compose_fast:.1f}×" if compose_fast else "—"
    one_line = totals.compose_count - totals.compose_folded_count
    lines = [
        f"## render_bench — {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {machine(sources)}.{changed}",
        "",
        "| path | messages | seconds | msgs/s | µs/msg | ratio |",
        "|---|---:|---:|---:|---:|---:|",
        row("reference: token + Jinja + `build_message(…).as_bytes()`", built, totals.reference,
            "1×"),
        row("**mailer: `factory.make(…).data`**", built, totals.make, f"**{speedup:.1f}×**"),
        row("composition alone, reference: `composer.reference(…)`", built, totals.build, "1×"),
        row("composition alone, mailer: `composer.compose(…)`", totals.compose_count,
            totals.compose, compose_ratio),
        row("Jinja rendering alone: `renderer.render(…)`", totals.compose_count,
            totals.render_alone, "—"),
        row("token + Message-ID: `factory.links`, `factory.message_id`", totals.compose_count,
            totals.prepare_alone, "—"),
    ]  # fmt: skip
    lines += stages_table(totals, compose_fast)
    ratios = sorted(totals.chunk_ratios)
    goal = "met" if speedup >= 10 else "**NOT met**"
    lines += [
        "",
        f"Ratio mailer/reference: **{speedup:.1f}×** (goal ≥ 10×: {goal}); per chunk of"
        f" {totals.count // len(ratios):,} subscribers min {ratios[0]:.1f}×, median"
        f" {median(ratios):.1f}×, max {ratios[-1]:.1f}× ({len(ratios)} chunks, alternating"
        " which path runs first).",
        "",
        f"Per message: mailer's {totals.make / built * 1e6:,.0f} µs ≈ token and Message-ID"
        f" {us(totals.prepare_alone, totals.compose_count)} + Jinja"
        f" {us(totals.render_alone, totals.compose_count)} + composition"
        f" {compose_fast * 1e6:,.0f} µs (the second pass, step by step); the reference's"
        f" {totals.reference / built * 1e6:,.0f} µs = token and Message-ID"
        f" {us(totals.prepare, built)} + Jinja {us(totals.render, built)} + `build_message`"
        f" {us(totals.build, built)}. Jinja is slower inside the reference loop than on its"
        " own: build_message's garbage and cache misses come in between. Composition takes"
        f" {us(totals.compose_folded, totals.compose_folded_count)} for the"
        f" {totals.compose_folded_count:,} messages whose To header is folded over several"
        " lines and"
        f" {us(totals.compose - totals.compose_folded, one_line)}"
        " for the others.",
        "",
        f"Subscribers: {n:,} generated (seed {seed}); {percent(totals.smtputf8, n)} have a"
        " non-ASCII local part (SMTPUTF8: mailer builds those with the reference itself)."
        f" Of the {built:,} messages built: {percent(totals.no_name, built)} without a name,"
        f" {percent(totals.encoded_name, built)} with an accented name (an encoded word in"
        f" To), {percent(totals.to_folded, built)} with a To header folded over two lines or"
        f" more, {percent(totals.idn, built)} to an IDN domain;"
        f" {totals.message_bytes / built:,.0f} bytes per message on average.",
        "",
    ]
    if totals.mismatch_count:
        lines.append(
            f"**MISMATCHES: {totals.mismatch_count:,}**: the fast path's bytes (or its error)"
            " differ from the reference's for these subscribers (first ones below). This run"
            " does not count."
        )
    else:
        lines.append(
            f"Checked: for every one of the {built:,} subscribers built, `make().data` and,"
            " in the second pass, `compose()` give byte for byte the reference's bytes (same"
            " Message-ID and Date)."
        )
    if totals.refused_count:
        lines += [
            "",
            f"**REFUSED BY BOTH PATHS: {totals.refused_count:,} subscriber(s)**: neither the"
            " reference nor mailer can build their message; they are left out of the"
            " timings. This is a bug, not a benchmark artefact:",
            "",
        ]
        lines += [
            f"- `{recipient!r}`: reference `{ref}`; mailer `{fast}`"
            for recipient, fast, ref in totals.refused[:5]
        ]
    lines += [
        "",
        f"Wall time {wall:.0f} s; others' load during the run {others:.2f} cores (CPU used by"
        " every other process on the machine: the noise). Peak RSS of this process:"
        f" {main_rss['peak']:.1f} MiB (VmHWM; ru_maxrss {main_rss['maxrss']:.1f} MiB).",
    ]
    if memory:
        points = memory["points"]
        lines += [
            "",
            "Memory: a child process streams generated subscribers (a generator, never a"
            " list) through `factory.make(…).data` alone; RSS after set-up (and a 200-message"
            f" fast-path warm-up) and after each size. Afterwards, {memory['checked']:,} of its"
            " messages (every 997th, and each refused one) were checked against the reference:"
            f" {memory['mismatched']} differed. {memory['smtputf8']:,} of the"
            f" {points[-1]['messages']:,} subscribers need SMTPUTF8; {memory['refused']:,}"
            " messages were refused.",
            "",
            "| messages | seconds in make() | msgs/s | peak RSS MiB (VmHWM) |"
            " ru_maxrss MiB | current RSS MiB (VmRSS) |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for point in points:
            rate = f"{point['messages'] / point['seconds']:,.0f}" if point["seconds"] else "—"
            lines.append(
                f"| {point['messages']:,} | {point['seconds']:.2f} | {rate} |"
                f" {point['peak']:.1f} | {point['maxrss']:.1f} | {point['current']:.1f} |"
            )
        small, large = points[1 if len(points) > 2 else 0], points[-1]
        lines += [
            "",
            f"From {small['messages']:,} to {large['messages']:,} messages: peak RSS"
            f" {large['peak'] - small['peak']:+.1f} MiB"
            f" (ratio {large['peak'] / small['peak']:.2f}),"
            f" current RSS {large['current'] - small['current']:+.1f} MiB. The memory run went"
            f" first: this process's ru_maxrss was {memory['parent_maxrss']:.1f} MiB when it"
            " started it (a child's ru_maxrss is at least that). Others' load during the"
            f" memory run: {memory['others']:.2f} cores.",
        ]
    for mismatch in totals.mismatches[:5]:
        lines += [
            "",
            f"Mismatch ({mismatch.path}) for `{mismatch.recipient!r}`:",
            "",
            "```diff",
            first_difference(mismatch.fast, mismatch.reference),
            "```",
        ]
    return "\n".join(lines) + "\n"


# --- command line ---------------------------------------------------------------------------


def positive(text: str) -> int:
    value = int(text.replace("_", ""))
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--count",
        type=positive,
        default=DEFAULT_COUNT,
        help=f"subscribers compared on both paths (default {DEFAULT_COUNT:,})",
    )
    parser.add_argument(
        "--memory-sizes",
        type=parse_counts,
        default=list(DEFAULT_MEMORY_SIZES),
        help="fast-path memory run: message counts (default 10000,100000; 0 skips it)",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="generator seed")
    parser.add_argument(
        "--chunk",
        type=positive,
        default=250,
        help="subscribers per interleaved chunk (default 250)",
    )
    parser.add_argument("--warmup", type=int, default=200, help="warm-up messages per path")
    parser.add_argument(
        "--snapshot",
        action="store_true",
        help="run on a copy of mailer/ and templates/ taken at the start (others may edit them)",
    )
    parser.add_argument("--memory-child", type=parse_counts, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        return memory_child(args.memory_child, args.seed)
    snapshot = os.environ.get(SNAPSHOT_ENV)
    if args.snapshot and not snapshot:
        run_snapshot(sys.argv[1:] if argv is None else argv)  # does not return
    if snapshot and not sources()[0].is_relative_to(Path(snapshot)):
        raise SystemExit(f"mailer was imported from {sources()[0]}, not from {snapshot}")
    try:
        return run(args, frozen=bool(snapshot))
    finally:
        if snapshot:
            shutil.rmtree(snapshot, ignore_errors=True)


def run(args: argparse.Namespace, *, frozen: bool) -> int:
    started, sources = datetime.now(UTC), fingerprint()
    memory = None
    if args.memory_sizes:  # first, while this process is small (see rss_mib)
        log(f"memory run (child process): fast path over {args.memory_sizes} subscribers")
        parent_maxrss, busy, spent = rss_mib()["maxrss"], machine_busy_seconds(), children_cpu()
        begun = time.perf_counter()
        memory = measure_memory(args.memory_sizes, args.seed)
        elapsed = time.perf_counter() - begun
        others = (machine_busy_seconds() - busy - (children_cpu() - spent)) / elapsed
        memory.update(parent_maxrss=parent_maxrss, others=max(0.0, others))
    t0, busy0, cpu0 = time.perf_counter(), machine_busy_seconds(), time.process_time()

    log(f"compiling {CAMPAIGN} and warming up ({args.warmup} messages per path)")
    factory = make_factory()
    warm_up(factory, args.warmup)
    totals = Totals()
    log(f"both paths, {args.count:,} subscribers in chunks of {args.chunk}")
    digests = compare_paths(factory, args.count, args.seed, args.chunk, totals)
    if not totals.built:
        log("no subscriber's message could be built by both paths: nothing to report")
        return 1
    log("composition alone, second pass")
    if args.count * 3 < QP_CACHE_LINES:
        log(
            f"  note: with fewer than {QP_CACHE_LINES // 3:,} subscribers, compose() finds"
            " some of each message's own lines still cached: it looks faster than it is"
        )
    compose_alone(factory, args.count, args.seed, digests, totals)
    log("make() and the pre-flight, with the skeleton and the plain way, third pass")
    before_after(factory, args.count, args.seed, args.chunk, totals)
    main_rss = rss_mib()
    wall = time.perf_counter() - t0
    others = (machine_busy_seconds() - busy0 - (time.process_time() - cpu0)) / wall

    if memory:
        totals.mismatch_count += memory["mismatched"]

    markdown = report(
        totals, memory, started, wall, max(0.0, others), main_rss, args.seed, sources, frozen
    )
    sys.stdout.write(markdown)
    if totals.mismatch_count:
        log(f"FAILED: {totals.mismatch_count} mismatch(es) between mailer and the reference")
        for mismatch in totals.mismatches:
            log(f"  {mismatch.path}: {mismatch.recipient!r}")
            log(first_difference(mismatch.fast, mismatch.reference))
        return 1
    if totals.refused_count:
        log(
            f"FAILED: {totals.refused_count} subscriber(s) refused by both paths"
            " (the same error in the reference): see REFUSED BY BOTH PATHS above"
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
