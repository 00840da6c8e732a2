"""The sending loop of one process through one relay: claim → render → send → record, K at a
time, at a given rate, within the relay's declared windows.

    producer ──claim (lease)──▶ queue ──▶ K senders ──render, rate, transport.send──▶ outcomes
                                                                                    │ ≤ 100 ms
    recorder ◀──────────────────────────────────────────────────────────────────────┘
    (one transaction per flush: states + attempts log; renews the leases)

What is held, leased and awaiting its commit is the `Recorder`'s (mailer.sending.recorder);
what each reply means is the policy's, unless the relay speaks of its own budget
(mailer.sending.refusals): then nobody is charged. "Quota" stops the run and pauses the relay
in the ledger; "slow down" throttles the run (mailer.sending.throttle) and, when it persists,
stops and pauses it too. Stopping (a signal, passed on by the run, or whole-run
trouble such as an unreachable relay) stops claiming, lets the messages in flight finish and
be recorded, and releases what was claimed but not tried back to the state it came from, with
no attempt counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from mailer.core.clock import Clock
from mailer.core.delivery import Reply, Submission, Transport
from mailer.core.errors import InputError, MailerError, RelayRefusedError
from mailer.core.states import DeliveryState
from mailer.core.tokens import verp_address
from mailer.messages.factory import MessageFactory
from mailer.sending.budgetwatch import BudgetWatch
from mailer.sending.guard import RefusalGuard
from mailer.sending.options import ProgressFn, RateLimiter, RunOptions, Tally, sleep_unless
from mailer.sending.policy import Decision, Outcome, decide
from mailer.sending.recorder import FLUSH_SECONDS, Recorder, describe, worker_name
from mailer.sending.refusals import Refusal, classify
from mailer.sending.throttle import Throttle
from mailer.store import claims

REQUEUE_LIMIT = 3  # slow-downs for one message: then it waits for a later run, uncharged


class Dispatcher:
    """One process's run over one campaign's due deliveries."""

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
        self.campaign_id = campaign_id
        self.factory = factory
        self.transport = transport
        self.options = options
        self.clock = clock
        self.owner = owner or worker_name()
        self.recorder = Recorder(engine, self.owner, clock, options.lease_seconds, options.relay)
        self.progress = progress
        self.rng = rng or random.Random()
        self.tally = Tally()
        self.stop = asyncio.Event()
        self.error: MailerError | None = None
        self._sender = factory.campaign.sender.addr_spec
        self._queue: asyncio.Queue[claims.Claimed | None] = asyncio.Queue()
        self._again: deque[claims.Claimed] = deque()  # requeued after a 421
        self._recorded = asyncio.Event()  # the recorder's own stop: after the senders end
        self._drained = asyncio.Event()  # nothing more will be queued
        self._requeues: dict[int, int] = {}
        self._claimed = 0
        self._limiter = RateLimiter(options.rate)
        self.throttle = Throttle(options.concurrency, options.throttle_pause)
        self.budget = BudgetWatch(options.relay or transport.description, transport.description,
                                  options, self.recorder, clock)
        self.guard = RefusalGuard(transport.description, self._record_failed)

    def interrupt(self, signum: int) -> None:
        """Stop for this signal (Ctrl-C, SIGTERM): the run then exits 128 + signum."""
        self.tally.interrupted = True
        self.tally.signal = signum
        self.stop.set()

    # --- the run ---------------------------------------------------------------------------

    async def run(self, total: int = 0) -> Tally:
        """Send what is due; raise the whole-run error, if any, after cleaning up."""
        self.tally.total, self.tally.started = total, time.monotonic()
        recorder: asyncio.Task[None] | None = None
        senders: list[asyncio.Task[None]] = []
        ends: list[Any] = []
        try:
            await self.budget.load_waits()
            await self.transport.start()
            recorder = asyncio.create_task(self._record_loop())
            senders = [
                asyncio.create_task(self._send_loop(index))
                for index in range(self.options.concurrency)
            ]
            await self._produce()
        except RelayRefusedError as exc:
            self._refuse(Refusal(exc.kind), exc.reply)
        except MailerError as exc:
            self._fail(exc)
        finally:
            self._drained.set()
            for _ in senders:
                self._queue.put_nowait(None)
            ends = list(await asyncio.gather(*senders, return_exceptions=True))
            self.stop.set()
            self._recorded.set()
            if recorder is not None:
                ends.append((await asyncio.gather(recorder, return_exceptions=True))[0])
            await self._finish()
        for end in ends:
            if isinstance(end, BaseException):
                raise end  # a bug: crash loudly, after the cleanup above
        if self.error is not None:
            raise self.error
        return self.tally

    async def _finish(self) -> None:
        """Record what was answered, release what was not tried, close the connections."""
        try:
            self.guard.record()  # fewer than guard.LIMIT alike: about the recipients
            try:
                await self.recorder.flush()
                refused = await self.budget.settle(self.tally)
                if refused is not None:
                    self._fail(refused)
            except MailerError as exc:
                self._fail(exc)
            try:
                self.tally.released += await self.recorder.release_unanswered()
            except MailerError as exc:
                self._fail(exc)
        finally:
            with contextlib.suppress(Exception):
                await self.transport.close()
            self.tally.slowdowns += getattr(self.transport, "refused_connections", 0)
            self.recorder.close()
            self._report()

    def _fail(self, error: MailerError) -> None:
        if self.error is None:
            self.error = error
        self.stop.set()

    # --- the relay's budget ----------------------------------------------------------------

    def _refuse(self, kind: Refusal, reply: str, item: claims.Claimed | None = None) -> None:
        """The relay refuses for its budget: this delivery goes back to waiting, uncharged;
        the run stops; the relay is paused after it (BudgetWatch.settle)."""
        if item is not None:
            self.recorder.add(item, item.origin, None, reply, self.clock(), charged=False)
            self.tally.returned += 1
        self.budget.refused(kind, reply)
        self.stop.set()

    async def _slow_down(self, item: claims.Claimed, text: str) -> None:
        """The relay says slow down: fewer connections, a slower pace, and this message
        again after a pause, uncharged; the run stops when it persists."""
        pause = self.throttle.slow_down()
        self.tally.slowdowns += 1
        if self.throttle.persistent:
            self._refuse(Refusal.SLOW_DOWN,
                         f"{self.throttle.in_a_row} replies in a row like {text!r}", item)
            return
        self._requeues[item.delivery_id] = self._requeues.get(item.delivery_id, 0) + 1
        if self._requeues[item.delivery_id] > REQUEUE_LIMIT:
            # This one keeps being refused while others pass: a later run tries it again.
            self.recorder.add(item, item.origin, None, text, self.clock(), charged=False)
            self.tally.returned += 1
            return
        self.tally.requeued += 1
        await sleep_unless(self.stop, pause)
        self._again.append(item)  # if the run stops meanwhile, it is released at the end

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
            result = await self.recorder.claim(
                self.campaign_id, limit=size, include_uncertain=self.options.include_uncertain
            )
            self.tally.skipped += result.skipped
            if not result.claimed and not result.skipped:
                return
            for item in result.claimed:
                self._queue.put_nowait(item)
            self._claimed += len(result.claimed)
        # Stopped: the senders see the event; what stays queued is released in _finish.

    # --- sending ---------------------------------------------------------------------------

    async def _next(self) -> claims.Claimed | None:
        if self._again:
            return self._again.popleft()
        return await self._queue.get()

    async def _send_loop(self, index: int) -> None:
        while not self.stop.is_set():
            await self.throttle.turn(index, self.stop, self._drained)
            item = await self._next()
            if item is None or self.stop.is_set():
                return
            try:
                await self._send_one(item)
            except RelayRefusedError as exc:
                # A new connection refused at its greeting (or login) for the relay's budget.
                if exc.kind == Refusal.SLOW_DOWN and self.guard.accepted:
                    await self._slow_down(item, exc.reply)
                    continue
                self._refuse(Refusal(exc.kind), exc.reply)
                return
            except MailerError as exc:
                # Whole-run trouble (relay unreachable, credentials refused ...): this one was
                # not tried; it is released with the rest.
                self._fail(exc)
                return

    async def _send_one(self, item: claims.Claimed) -> None:
        now = self.clock()
        try:
            # The Date header counts whole seconds: one folded Date serves a whole second.
            outgoing = self.factory.make(
                item.recipient, date=now.replace(microsecond=0), message_id=item.message_id
            )
        except InputError as exc:
            self._record(item, DeliveryState.FAILED, None, f"not sent: {exc.message}", now)
            return
        await self._limiter.wait(self.stop, self.throttle.pace)
        while self.recorder.backed_up and not self.stop.is_set():
            await asyncio.sleep(0.005)  # the database is slow to commit: wait for it
        if self.stop.is_set():
            return  # left held: released at the end
        if not self.recorder.still_ours(item):
            self.tally.lost += 1
            return  # left held: released at the end if it is still ours after all
        allowance = self.budget.allowance
        if allowance is not None and not await allowance.take(self.stop):
            self.stop.set()  # the window is full for a while: left held, released at the end
            return
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

    async def _decide(self, item: claims.Claimed, reply: Reply) -> None:
        now = self.clock()
        text = describe(reply)
        kind = None if reply.accepted else classify(reply.code, reply.text, reply.stage)
        if kind is Refusal.BUDGET:
            self._refuse(kind, text, item)
            return
        if kind is Refusal.SLOW_DOWN:
            await self._slow_down(item, text)
            return
        first = item.first_attempt_at or now
        decision = decide(
            reply,
            attempts=item.attempts + 1,
            first_attempt_at=self.budget.age_start(first, now),
            now=now,
            backoff=self.options.backoff,
            rng=self.rng,
        )
        if reply.accepted:
            self.throttle.accepted()
            self.guard.accept()
        if decision.outcome is Outcome.REQUEUED:  # a 421 the table did not know: slow down
            await self._slow_down(item, text)
            return
        if decision.outcome is Outcome.FAILED and self.guard.hold(item, reply, text, decision):
            if self.guard.error is not None:
                self._fail(self.guard.error)
            return
        state = DeliveryState(decision.outcome.value)
        self._record(
            item, state, reply.code, text, now,
            next_attempt_at=decision.next_attempt_at,
            bounce=decision.bounce,
        )

    def _record_failed(self, item: claims.Claimed, reply: Reply, text: str,
                       decision: Decision) -> None:
        self._record(item, DeliveryState.FAILED, reply.code, text, self.clock(),
                     bounce=decision.bounce)

    def _record(self, item: claims.Claimed, state: DeliveryState, code: int | None, reply: str,
                now: datetime, *, next_attempt_at: datetime | None = None,
                bounce: bool = False) -> None:
        self.recorder.add(item, state, code, reply, now, next_attempt_at=next_attempt_at,
                          bounce=bounce)
        self.tally.count(Outcome(state.value))

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
                await self.recorder.flush()
                if time.monotonic() - renewed > renew_every and self.recorder.held:
                    renewed = time.monotonic()
                    await self.recorder.renew()
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
