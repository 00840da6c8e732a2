"""The sending loop of one process: claim → render → send → record, K at a time, at a given rate.

    producer ──claim (lease)──▶ queue ──▶ K senders ──render, rate, transport.send──▶ outcomes
                                                                                    │ ≤ 100 ms
    recorder ◀──────────────────────────────────────────────────────────────────────┘
    (one transaction per flush: states + attempts log; renews the leases)

What is held, leased and awaiting its commit is the `Recorder`'s (mailer.sending.recorder);
what each reply means is the policy's. Stopping (a signal, passed on by the run, or whole-run
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
from mailer.core.errors import ConfigError, InputError, MailerError, RelayTemporaryError
from mailer.core.states import DeliveryState
from mailer.core.tokens import verp_address
from mailer.messages.factory import MessageFactory
from mailer.sending.options import ProgressFn, RateLimiter, RunOptions, Tally, sleep_unless
from mailer.sending.policy import Decision, Outcome, decide
from mailer.sending.recorder import FLUSH_SECONDS, Recorder, describe, worker_name
from mailer.store import claims

THROTTLE_LIMIT = 5  # throttling replies in a row (no acceptance between) that stop the run
REQUEUE_LIMIT = 3  # 421s for one message before it is deferred like any temporary failure
# Permanent refusals in a row, all with the same reply (the recipient's address taken out)
# and no acceptance in this run: the relay refuses the sender or the client, not these
# recipients ("554 5.7.1 Relay access denied"); the run stops and nobody is marked.
REFUSAL_LIMIT = 20


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
        self.recorder = Recorder(engine, self.owner, clock, options.lease_seconds)
        self.progress = progress
        self.rng = rng or random.Random()
        self.tally = Tally()
        self.stop = asyncio.Event()
        self.error: MailerError | None = None
        self._sender = factory.campaign.sender.addr_spec
        self._queue: asyncio.Queue[claims.Claimed | None] = asyncio.Queue()
        self._again: deque[claims.Claimed] = deque()  # requeued after a 421
        self._recorded = asyncio.Event()  # the recorder's own stop: after the senders end
        self._requeues: dict[int, int] = {}
        # Permanent refusals held back while they may be the relay's, not the recipients'.
        self._refusals: list[tuple[claims.Claimed, str, Reply, str, Decision]] = []
        self._accepted = False
        self._tripped = False  # REFUSAL_LIMIT reached: the relay refuses us, not them
        self._claimed = 0
        self._throttled = 0
        self._limiter = RateLimiter(options.rate)

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
            self._record_refusals()  # fewer than REFUSAL_LIMIT: about the recipients
            try:
                await self.recorder.flush()
            except MailerError as exc:
                self._fail(exc)
            try:
                self.tally.released += await self.recorder.release_unanswered()
            except MailerError as exc:
                self._fail(exc)
        finally:
            with contextlib.suppress(Exception):
                await self.transport.close()
            self.recorder.close()
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
        await self._limiter.wait(self.stop)
        while self.recorder.backed_up and not self.stop.is_set():
            await asyncio.sleep(0.005)  # the database is slow to commit: wait for it
        if self.stop.is_set():
            return  # left held: released at the end
        if not self.recorder.still_ours(item):
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

    async def _decide(self, item: claims.Claimed, reply: Reply) -> None:
        now = self.clock()
        decision = decide(
            reply,
            attempts=item.attempts + 1,
            first_attempt_at=item.first_attempt_at or now,
            now=now,
            backoff=self.options.backoff,
            rng=self.rng,
        )
        text = describe(reply)
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
                await sleep_unless(self.stop, pause)
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
        self, item: claims.Claimed, reply: Reply, text: str, decision: Decision
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
