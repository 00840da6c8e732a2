"""The sending loop of one run: claim → render → send → record, K at a time, at a given rate.

    producer ──claim (lease)──▶ queue ──▶ K senders ──render, rate, transport.send──▶ results
                                                                                    │ ≤ 100 ms
    recorder ◀──────────────────────────────────────────────────────────────────────┘
    (one transaction per flush: states + attempts log; renews the leases)

Only SMTP is async. Every database call runs on one dedicated thread, so a slow commit never
stalls an SMTP timer. A delivery is `sending` (committed) before its DATA, and its outcome is
committed within `FLUSH_SECONDS` of the relay's reply: a crash can leave at most the messages
being transmitted plus those acknowledged in the last flush interval without their record.

Stopping (Ctrl-C, SIGTERM, or whole-run trouble such as an unreachable relay) stops claiming,
lets the messages in flight finish and be recorded, and releases what was claimed but not
tried back to the state it came from, with no attempt counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import socket
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import Engine

from mailer.core.clock import Clock
from mailer.core.config import Rate
from mailer.core.delivery import Reply, Stage, Submission, Transport
from mailer.core.errors import ConfigError, InputError, MailerError, RelayTemporaryError
from mailer.core.states import DeliveryState
from mailer.core.tokens import verp_address
from mailer.messages.factory import MessageFactory
from mailer.sending.policy import Backoff, Decision, Outcome, decide
from mailer.store import deliveries as store
from mailer.store.engine import write_transaction

T = TypeVar("T")
FLUSH_SECONDS = 0.1  # outcomes are committed at most this long after the relay's reply
UNRECORDED_LIMIT = 1000  # senders wait while this many replies await their commit (slow DB)
THROTTLE_LIMIT = 5  # throttling replies in a row (no acceptance between) that stop the run
REQUEUE_LIMIT = 3  # 421s for one message before it is deferred like any temporary failure
# Permanent refusals in a row, all with the same reply (the recipient's address taken out)
# and no acceptance in this run: the relay refuses the sender or the client, not these
# recipients ("554 5.7.1 Relay access denied"); the run stops and nobody is marked.
REFUSAL_LIMIT = 20


def worker_name() -> str:
    """Who holds a lease: host, process and a random suffix (pids are reused)."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass
class Tally:
    """What this run did, for the progress bar and the summary."""

    total: int = 0  # deliveries due when the run started (the progress bar's length)
    sent: int = 0
    deferred: int = 0
    failed: int = 0
    uncertain: int = 0
    skipped: int = 0
    released: int = 0
    requeued: int = 0
    lost: int = 0  # claimed, then not sent: the lease ran out first (a paused process)
    started: float = 0.0
    interrupted: bool = False
    signal: int = 0  # the signal that stopped the run (SIGINT, SIGTERM), if any

    @property
    def done(self) -> int:
        return self.sent + self.deferred + self.failed + self.uncertain + self.skipped

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started if self.started else 0.0

    def count(self, outcome: Outcome) -> None:
        name = outcome.value
        setattr(self, name, getattr(self, name) + 1)


ProgressFn = Callable[[Tally], None]


class RateLimiter:
    """At most `rate` message starts per second, spread evenly (no bursts)."""

    def __init__(self, rate: Rate | None) -> None:
        self.interval = 1.0 / rate.per_second if rate else 0.0
        self._next = 0.0

    async def wait(self, stop: asyncio.Event) -> None:
        """Until this message's slot, or until `stop` is set."""
        if not self.interval:
            return
        now = time.monotonic()
        start = max(now, self._next)
        self._next = start + self.interval
        if start > now:
            await _sleep_unless(stop, start - now)


@dataclass(frozen=True)
class RunOptions:
    concurrency: int = 4
    rate: Rate | None = None
    limit: int | None = None  # send at most this many deliveries in this run
    include_uncertain: bool = True
    lease_seconds: float = 600.0
    backoff: Backoff = field(default_factory=Backoff)
    batch_size: int = 200
    throttle_pause: float = 1.0  # first pause after a throttling reply; doubles, ≤ 30 s
    bounce_address: str | None = None  # VERP: each envelope sender is LOCAL+TOKEN@domain


class Dispatcher:
    """One run over one campaign's due deliveries."""

    def __init__(
        self,
        engine: Engine,
        campaign_id: int,
        factory: MessageFactory,
        transport: Transport,
        options: RunOptions,
        *,
        clock: Clock,
        owner: str | None = None,
        progress: ProgressFn | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.engine = engine
        self.campaign_id = campaign_id
        self.factory = factory
        self.transport = transport
        self.options = options
        self.clock = clock
        self.owner = owner or worker_name()
        self.progress = progress
        self.on_signal: Callable[[int], None] | None = None  # also told of Ctrl-C / SIGTERM
        self.leave_on_second_signal = True  # a worker child leaves that to its parent
        self.rng = rng or random.Random()
        self.tally = Tally()
        self.stop = asyncio.Event()
        self.error: MailerError | None = None
        self._sender = factory.campaign.sender.addr_spec
        self._queue: asyncio.Queue[store.Claimed | None] = asyncio.Queue()
        self._again: deque[store.Claimed] = deque()  # requeued after a 421
        self._held: dict[int, DeliveryState] = {}  # claimed and not yet recorded
        # When each held delivery's lease ends, as far as this worker knows: it is never sent
        # once that is near, since another worker may have taken it over (a process paused
        # longer than its lease, say). Moved on by each renewal that finds it still ours.
        self._lease_ends: dict[int, datetime] = {}
        self._results: list[store.Result] = []
        self._recorded = asyncio.Event()  # the recorder's own stop: after the senders end
        self._requeues: dict[int, int] = {}
        # Permanent refusals held back while they may be the relay's, not the recipients'.
        self._refusals: list[tuple[store.Claimed, str, Reply, str, Decision]] = []
        self._accepted = False
        self._tripped = False  # REFUSAL_LIMIT reached: the relay refuses us, not them
        self._claimed = 0
        self._throttled = 0
        self._limiter = RateLimiter(options.rate)
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailer-db")

    # --- the database thread ---------------------------------------------------------------

    async def _in_db(self, work: Callable[[Any], T]) -> T:
        def run() -> T:
            with write_transaction(self.engine) as connection:
                return work(connection)

        return await asyncio.get_running_loop().run_in_executor(self._db, run)

    # --- the run ---------------------------------------------------------------------------

    async def run(self, total: int = 0) -> Tally:
        """Send what is due; raise the whole-run error, if any, after cleaning up."""
        self.tally = Tally(total=total, started=time.monotonic())
        recorder: asyncio.Task[None] | None = None
        senders: list[asyncio.Task[None]] = []
        outcomes: list[Any] = []
        try:
            await self.transport.start()
            recorder = asyncio.create_task(self._record_loop())
            senders = [
                asyncio.create_task(self._send_loop()) for _ in range(self.options.concurrency)
            ]
            await self._produce()
        except MailerError as exc:
            self._fail(exc)
        finally:
            for _ in senders:
                self._queue.put_nowait(None)
            outcomes = list(await asyncio.gather(*senders, return_exceptions=True))
            self.stop.set()
            self._recorded.set()
            if recorder is not None:
                outcomes.append((await asyncio.gather(recorder, return_exceptions=True))[0])
            await self._finish()
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome  # a bug: crash loudly, after the cleanup above
        if self.error is not None:
            raise self.error
        return self.tally

    async def _finish(self) -> None:
        """Record what was answered, release what was not tried, close the connections.

        A reply that could not be recorded keeps its delivery `sending`: the lease then makes
        it `uncertain`. It is never released as if it had not been tried.
        """
        try:
            self._record_refusals()  # fewer than REFUSAL_LIMIT: about the recipients
            try:
                await self._flush()
            except MailerError as exc:
                self._fail(exc)
            answered = {result.delivery_id for result in self._results}
            held = [(i, origin) for i, origin in self._held.items() if i not in answered]
            if held:
                now = self.clock()
                try:
                    self.tally.released += await self._in_db(
                        lambda c: store.release(c, self.owner, held, now)
                    )
                except MailerError as exc:
                    self._fail(exc)
                self._held.clear()
        finally:
            with contextlib.suppress(Exception):
                await self.transport.close()
            self._db.shutdown(wait=True)
            self._report()

    def _fail(self, error: MailerError) -> None:
        if self.error is None:
            self.error = error
        self.stop.set()

    # --- claiming --------------------------------------------------------------------------

    def _claim_size(self) -> int:
        size = self.options.batch_size
        if self.options.rate is not None:
            # Never hold more than about 30 s of work: the rest stays free for other workers.
            size = min(size, max(1, int(self.options.rate.per_second * 30)))
        if self.options.limit is not None:
            size = min(size, self.options.limit - self._claimed)
        return size

    async def _produce(self) -> None:
        low_water = max(self.options.concurrency * 2, self.options.batch_size // 2)
        if self.options.rate is not None:
            # Hold about 30 s of work at most: the rest stays free for other workers.
            low_water = min(low_water, max(1, int(self.options.rate.per_second * 30)))
        while not self.stop.is_set():
            size = self._claim_size()
            if size <= 0:
                return
            if self._queue.qsize() > low_water:
                await asyncio.sleep(0.005)
                continue
            now = self.clock()
            result = await self._in_db(
                partial(
                    store.claim,
                    campaign_id=self.campaign_id,
                    owner=self.owner,
                    now=now,
                    lease_seconds=self.options.lease_seconds,
                    limit=size,
                    include_uncertain=self.options.include_uncertain,
                )
            )
            self.tally.skipped += result.skipped
            if not result.claimed and not result.skipped:
                return
            lease_ends = now + timedelta(seconds=self.options.lease_seconds)
            for item in result.claimed:
                self._held[item.delivery_id] = item.origin
                self._lease_ends[item.delivery_id] = lease_ends
                self._queue.put_nowait(item)
            self._claimed += len(result.claimed)
        # Stopped: the senders see the event; what stays queued is released in _finish.

    # --- sending ---------------------------------------------------------------------------

    async def _next(self) -> store.Claimed | None:
        if self._again:
            return self._again.popleft()
        return await self._queue.get()

    async def _send_loop(self) -> None:
        while not self.stop.is_set():
            item = await self._next()
            if item is None or self.stop.is_set():
                return
            try:
                await self._send_one(item)
            except MailerError as exc:
                # Whole-run trouble (relay unreachable, credentials refused ...): this one was
                # not tried; it is released with the rest.
                self._fail(exc)
                return

    async def _send_one(self, item: store.Claimed) -> None:
        now = self.clock()
        try:
            # The Date header counts whole seconds: one folded Date serves a whole second.
            outgoing = self.factory.make(
                item.recipient, date=now.replace(microsecond=0), message_id=item.message_id
            )
        except InputError as exc:
            self._record(item, DeliveryState.FAILED, None, f"not sent: {exc.message}", now)
            return
        await self._limiter.wait(self.stop)
        while len(self._results) >= UNRECORDED_LIMIT and not self.stop.is_set():
            await asyncio.sleep(0.005)  # the database is slow to commit: wait for it
        if self.stop.is_set():
            return  # left held: released at the end
        if not self._still_ours(item):
            self.tally.lost += 1
            return  # left held: released at the end if it is still ours after all
        bounce_address = self.options.bounce_address
        reply = await self.transport.send(
            Submission(
                item.delivery_id,
                verp_address(bounce_address, outgoing.links.token)
                if bounce_address else self._sender,
                item.recipient.address,
                outgoing.data,
                item.message_id,
                outgoing.smtputf8,
            )
        )
        await self._decide(item, reply)

    async def _decide(self, item: store.Claimed, reply: Reply) -> None:
        now = self.clock()
        decision = decide(
            reply,
            attempts=item.attempts + 1,
            first_attempt_at=item.first_attempt_at or now,
            now=now,
            backoff=self.options.backoff,
            rng=self.rng,
        )
        text = _describe(reply)
        if decision.throttle:
            self._throttled += 1
            if self._throttled >= THROTTLE_LIMIT:
                self._fail(RelayTemporaryError(
                    f"the relay {self.transport.description} keeps throttling: "
                    f"{self._throttled} replies in a row like {text!r}",
                    hint="nothing was marked failed; run again later, or lower --rate",
                ))
        elif reply.accepted:
            self._throttled = 0
        if reply.accepted and not self._accepted:
            self._accepted = True
            self._record_refusals()
        if decision.outcome is Outcome.REQUEUED:
            self._requeues[item.delivery_id] = self._requeues.get(item.delivery_id, 0) + 1
            if self._requeues[item.delivery_id] <= REQUEUE_LIMIT:
                self.tally.requeued += 1
                self._again.append(item)
                pause = min(30.0, self.options.throttle_pause * 2 ** max(self._throttled - 1, 0))
                await _sleep_unless(self.stop, pause)
                return
            decision = decide(  # refused that often: a temporary failure, charged
                Reply(451, reply.text, reply.stage), attempts=item.attempts + 1,
                first_attempt_at=item.first_attempt_at or now, now=now,
                backoff=self.options.backoff, rng=self.rng,
            )
        if decision.outcome is Outcome.FAILED and self._hold_refusal(item, reply, text, decision):
            return
        state = DeliveryState(decision.outcome.value)
        self._record(
            item, state, reply.code, text, now,
            next_attempt_at=decision.next_attempt_at,
            bounce=decision.bounce,
        )

    def _hold_refusal(
        self, item: store.Claimed, reply: Reply, text: str, decision: Decision
    ) -> bool:
        """Hold back permanent refusals until it is clear they are about the recipients.

        The same refusal (the recipient's address taken out) for REFUSAL_LIMIT recipients in
        a row, before any acceptance in this run, is the relay refusing the sender or this
        client (a typo in MAILER_FROM, missing credentials): the run stops (exit 78) and those
        deliveries are released, not failed. A different reply, an acceptance or the end of
        the run records the ones held as failed after all.
        """
        if self._accepted or reply.code is None:
            return False
        if self._tripped:
            return True  # the run is stopping for it: released at the end with the others
        shape = text.replace(item.recipient.address, "<>")
        if self._refusals and self._refusals[0][1] != shape:
            self._record_refusals()
        self._refusals.append((item, shape, reply, text, decision))
        if len(self._refusals) >= REFUSAL_LIMIT:
            self._fail(ConfigError(
                f"the relay {self.transport.description} refused the first "
                f"{len(self._refusals)} recipients with the same reply: {text!r}",
                hint="nobody was marked failed: check the sender (MAILER_FROM), the "
                "credentials and the relay's rules, then run again",
            ))
            self._refusals.clear()  # still held: released at the end
            self._tripped = True
        return True

    def _record_refusals(self) -> None:
        for item, _shape, reply, text, decision in self._refusals:
            self._record(item, DeliveryState.FAILED, reply.code, text, self.clock(),
                         bounce=decision.bounce)
        self._refusals.clear()

    def _record(
        self,
        item: store.Claimed,
        state: DeliveryState,
        code: int | None,
        reply: str,
        now: Any,
        *,
        next_attempt_at: Any = None,
        bounce: bool = False,
    ) -> None:
        self._results.append(
            store.Result(
                item.delivery_id,
                state,
                now,
                code,
                reply,
                next_attempt_at,
                item.recipient.id if bounce else None,
            )
        )
        self.tally.count(Outcome(state.value))

    def _still_ours(self, item: store.Claimed) -> bool:
        """Whether the lease leaves time to send it: a margin of a tenth of the lease
        (at most 30 s) before it ends, for the transaction itself."""
        margin = timedelta(seconds=min(30.0, self.options.lease_seconds / 10))
        ends = self._lease_ends.get(item.delivery_id)
        return ends is not None and self.clock() + margin < ends

    async def _renew(self) -> None:
        now = self.clock()
        ours = await self._in_db(partial(
            store.renew_leases, owner=self.owner, now=now,
            lease_seconds=self.options.lease_seconds))
        ends = now + timedelta(seconds=self.options.lease_seconds)
        for delivery_id in list(self._lease_ends):
            if delivery_id in ours:
                self._lease_ends[delivery_id] = ends
            elif delivery_id in self._held:
                # Taken over: not ours to send, record or release any more.
                del self._lease_ends[delivery_id]
                del self._held[delivery_id]

    # --- recording -------------------------------------------------------------------------

    async def _flush(self) -> None:
        if not self._results:
            return
        batch, self._results = self._results, []
        try:
            await self._in_db(lambda c: store.record(c, self.owner, batch))
        except BaseException:
            self._results[:0] = batch  # not recorded: never released as untried
            raise
        for result in batch:
            self._held.pop(result.delivery_id, None)
            self._lease_ends.pop(result.delivery_id, None)

    async def _record_loop(self) -> None:
        """Commit outcomes every FLUSH_SECONDS until the senders are done; renew the leases.

        It stops on its own event, set once every sender has finished, so replies that come
        after a Ctrl-C are still committed promptly. Any failure stops the whole run.
        """
        renew_every = self.options.lease_seconds / 3
        renewed = time.monotonic()
        while True:
            stopping = self._recorded.is_set()
            try:
                await self._flush()
                if time.monotonic() - renewed > renew_every and self._held:
                    renewed = time.monotonic()
                    await self._renew()
            except MailerError as exc:
                self._fail(exc)
                return
            except BaseException:
                self.stop.set()  # a bug: stop sending now; run() re-raises it after cleanup
                raise
            self._report()
            if stopping:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._recorded.wait(), FLUSH_SECONDS)

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(self.tally)


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    """Sleep, but wake up as soon as `stop` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def _describe(reply: Reply) -> str:
    """The reply as stored: `250 2.0.0 Ok: queued as ABC` or what happened instead."""
    if reply.code is None:
        where = "after the end of DATA" if reply.stage is Stage.DATA_END else f"at {reply.stage}"
        return f"no reply {where}: {reply.text}"
    return f"{reply.code} {reply.text}".strip()
