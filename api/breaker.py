"""A circuit breaker: stop calling a service that keeps failing, and try it again now and then.

Closed, every call goes through. After `failures` failures in a row (errors and timeouts alike)
it opens: for a cool-down, calls are refused at once, without touching the service. Then it is
half-open: one call goes through as a trial while the others are still refused; an answer closes
it, a failure opens it again for twice as long as before (never longer than `max_cool_down`).
Any answer closes it, and the next opening starts from the first cool-down again.

The breaker does no I/O of its own: callers ask `allow()` for a permit, make their call, and report
how it went (`succeeded`, `failed`, or `abandoned` for a call cancelled before it answered).

Time comes from the app's clock (tests move it by hand). A clock that goes backwards (a wall
clock corrected) ends the cool-down rather than stretching it: the worst it costs is one trial.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from models.kernel.clock import Clock

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


@dataclass(frozen=True)
class Permit:
    """Leave to make one call; `trial` when it is the half-open breaker's one trial."""

    trial: bool


class CircuitBreaker:
    def __init__(
        self,
        clock: Clock,
        *,
        failures: int = 3,
        cool_down: timedelta = timedelta(seconds=1),
        max_cool_down: timedelta = timedelta(seconds=5),
    ) -> None:
        if failures < 1:
            raise ValueError("a breaker opens after one failure or more")
        if cool_down <= timedelta(0) or max_cool_down < cool_down:
            raise ValueError("a breaker needs a positive cool-down no longer than its longest one")
        self.clock = clock
        self.failures = failures
        self.first_cool_down = cool_down
        self.max_cool_down = max_cool_down
        self._failures_in_a_row = 0
        self._opened_at: datetime | None = None
        self._cool_down = cool_down
        self._trial_running = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return CLOSED
        return HALF_OPEN if self._trial_running or self._cooled_down(self._opened_at) else OPEN

    @property
    def cool_down(self) -> timedelta:
        """How long the breaker stays (or would stay, on opening now) open."""
        return self._cool_down

    def allow(self) -> Permit | None:
        """A permit for one call, or None: refused without calling."""
        if self._opened_at is None:
            return Permit(trial=False)
        if self._trial_running or not self._cooled_down(self._opened_at):
            return None
        self._trial_running = True
        return Permit(trial=True)

    def succeeded(self, permit: Permit) -> None:
        """The service answered: close (whichever call it was, an answer proves it answers)."""
        self._failures_in_a_row = 0
        self._opened_at = None
        self._cool_down = self.first_cool_down
        self._trial_running = False

    def failed(self, permit: Permit) -> None:
        """The call failed or timed out."""
        if permit.trial:
            self._trial_running = False
            self._cool_down = min(self._cool_down * 2, self.max_cool_down)
            self._opened_at = self.clock.now()
        elif self._opened_at is None:
            self._failures_in_a_row += 1
            if self._failures_in_a_row >= self.failures:
                self._opened_at = self.clock.now()
        # else: a call let through before the breaker opened failed too: already counted as open.

    def abandoned(self, permit: Permit) -> None:
        """The call was cancelled before it answered: it proves nothing either way."""
        if permit.trial:
            self._trial_running = False

    def _cooled_down(self, opened_at: datetime) -> bool:
        elapsed = self.clock.now() - opened_at
        return elapsed >= self._cool_down or elapsed < timedelta(0)
