"""How a run slows down when the relay says so (421, 4.7.x "try again later", "rate limited",
a refused extra connection), and how it speeds up again.

Each slow-down halves the connections in use (at least one) and the pace, and the message it
concerned waits a pause that doubles with each slow-down in a row (up to 30 s) before it is
tried again, with no attempt counted against it. Every `RECOVER_AFTER` acceptances give back
one connection and the pace that goes with it. Slow-downs in a row with nothing accepted
between them (`LIMIT`) are no longer a passing mood: the run stops and the relay is paused,
as for a spent budget.
"""

from __future__ import annotations

import asyncio

LIMIT = 5  # slow-downs in a row, nothing accepted between: the relay keeps refusing
RECOVER_AFTER = 20  # acceptances that give back one connection
MAX_PAUSE = 30.0


class Throttle:
    """The run's current share of its connections and pace."""

    def __init__(self, connections: int, first_pause: float) -> None:
        self.most = max(1, connections)
        self.allowed = self.most
        self.first_pause = first_pause
        self.slowdowns = 0  # in this run, for the summary
        self.in_a_row = 0
        self._accepted = 0

    @property
    def persistent(self) -> bool:
        return self.in_a_row >= LIMIT

    @property
    def pace(self) -> float:
        """The fraction of the configured rate to keep to now (1.0: full speed)."""
        return self.allowed / self.most

    def slow_down(self) -> float:
        """One slow-down reply: fewer connections; the pause before its message is retried."""
        self.slowdowns += 1
        self.in_a_row += 1
        self._accepted = 0
        self.allowed = max(1, self.allowed // 2)
        return float(min(MAX_PAUSE, self.first_pause * 2 ** (self.in_a_row - 1)))

    def accepted(self) -> None:
        self.in_a_row = 0
        self._accepted += 1
        if self.allowed < self.most and self._accepted >= RECOVER_AFTER:
            self.allowed += 1
            self._accepted = 0

    async def turn(self, sender: int, stop: asyncio.Event, drained: asyncio.Event) -> None:
        """Sender number `sender` (0-based) waits while it is past the allowed connections,
        unless the run is stopping or nothing more is coming (`drained`: it then goes on to
        find the end of the queue)."""
        while sender >= self.allowed and not (stop.is_set() or drained.is_set()):
            await asyncio.sleep(0.05)
