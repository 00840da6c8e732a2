"""Permanent refusals held back while they may be the relay's, not the recipients'.

The same refusal (the recipient's address taken out) for `LIMIT` recipients in a row, before
any acceptance in this run, is the relay refusing the sender or this client (a typo in
MAILER_FROM, missing credentials, "554 5.7.1 Relay access denied"): the run stops (exit 78) and
those deliveries are released, not failed. A different reply, an acceptance or the end of the
run records the ones held as failed after all.
"""

from __future__ import annotations

from collections.abc import Callable

from mailer.core.delivery import Reply
from mailer.core.errors import ConfigError
from mailer.sending.policy import Decision
from mailer.store.claims import Claimed

LIMIT = 20
Held = tuple[Claimed, str, Reply, str, Decision]  # item, shape, reply, text, decision
RecordFailed = Callable[[Claimed, Reply, str, Decision], None]


class RefusalGuard:
    """Holds permanent refusals until they are clearly about the recipients."""

    def __init__(self, relay: str, record_failed: RecordFailed) -> None:
        self.relay = relay
        self.record_failed = record_failed
        self.accepted = False  # an acceptance in this run: refusals are the recipients'
        self.error: ConfigError | None = None  # set when LIMIT is reached
        self._held: list[Held] = []

    def hold(self, item: Claimed, reply: Reply, text: str, decision: Decision) -> bool:
        """True when this failure is held back (or the run is stopping for it)."""
        if self.accepted or reply.code is None:
            return False
        if self.error is not None:
            return True  # the run is stopping for it: released at the end with the others
        shape = text.replace(item.recipient.address, "<>")
        if self._held and self._held[0][1] != shape:
            self.record()
        self._held.append((item, shape, reply, text, decision))
        if len(self._held) >= LIMIT:
            self.error = ConfigError(
                f"the relay {self.relay} refused the first {len(self._held)} recipients with "
                f"the same reply: {text!r}",
                hint="nobody was marked failed: check the sender (MAILER_FROM), the "
                "credentials and the relay's rules, then run again",
            )
            self._held.clear()  # still held by the dispatcher: released at the end
        return True

    def accept(self) -> None:
        """The relay accepted a message: what was held was about those recipients."""
        if not self.accepted:
            self.accepted = True
            self.record()

    def record(self) -> None:
        """Record what is held as failed (fewer than LIMIT alike: about the recipients)."""
        for item, _shape, reply, text, decision in self._held:
            self.record_failed(item, reply, text, decision)
        self._held.clear()
