"""``bckd serve``'s supervisor: a part of the embedded stack that exits is started again.

The supervisor looks at the parts of a started :class:`~service.stack.embedded.Stack` every
``poll_s`` seconds, in the thread that calls :meth:`Supervisor.run`. A part that exited is restarted
with ``Stack.respawn`` (the same command line, ports, token and store) after a delay that doubles
with each exit in a row, 1, 2, 4, 8, 16, 30, 30 ... s, and starts again at 1 s once the part has
stayed up a minute; the others keep running. Five exits of one part within a minute mean it
cannot stay up (a port taken, a broken store): the supervisor gives up and says which part and
where its log is, and ``bckd serve`` then stops the stack. :meth:`Supervisor.request_stop`
(Ctrl-C, SIGTERM) ends the loop at its next look: nothing is restarted after it, and the stack
is stopped by the caller, in the same thread, so no restart can race the stop.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from service.stack.embedded import Part, Stack, answers

__all__ = ["Exits", "RestartPolicy", "Supervisor", "after_exit", "describe_exit",
           "restart_delay"]


@dataclass(frozen=True)
class RestartPolicy:
    first_delay_s: float = 1.0  # a part that ran a while is back in a second
    max_delay_s: float = 30.0  # the doubling stops here
    stable_after_s: float = 60.0  # up this long: the next exit starts again at first_delay_s
    max_exits: int = 5  # this many exits within window_s: give up (as systemd's StartLimitBurst)
    window_s: float = 60.0


@dataclass
class Exits:
    """One part's exits as far as the policy needs them."""

    times: list[float] = field(default_factory=list)  # time.monotonic(), within the window
    streak: int = 0  # restarts since the part last stayed up stable_after_s
    restarts: int = 0  # every restart so far, for the log


def restart_delay(policy: RestartPolicy, streak: int) -> float:
    """The wait before the restart that follows ``streak`` earlier ones in a row."""
    return min(policy.max_delay_s, policy.first_delay_s * 2 ** min(streak, 30))


def after_exit(policy: RestartPolicy, exits: Exits, now: float, uptime: float) -> float | None:
    """Record an exit at ``now`` of a part that had been up ``uptime`` seconds: the delay
    before its restart, or None when it exited ``max_exits`` times within ``window_s``."""
    exits.times = [t for t in exits.times if now - t < policy.window_s] + [now]
    if len(exits.times) >= policy.max_exits:
        return None
    if uptime >= policy.stable_after_s:
        exits.streak = 0
    delay = restart_delay(policy, exits.streak)
    exits.streak += 1
    exits.restarts += 1
    return delay


def describe_exit(code: int) -> str:
    """Popen's return code in words: a negative one is the signal that killed the process."""
    if code < 0:
        with_name = {s.value: s.name for s in signal.Signals}
        return f"killed by {with_name.get(-code, f'signal {-code}')}"
    return f"exit code {code}"


class Supervisor:
    """Watch the parts of ``stack`` and restart those that exit, by ``policy``; ``say`` gets
    one line per event (an exit, a restart, a part that answers again, giving up)."""

    def __init__(self, stack: Stack, policy: RestartPolicy | None = None,
                 say: Callable[[str], None] = print, poll_s: float = 0.5):
        self.stack, self.say, self.poll_s = stack, say, poll_s
        self.policy = policy or RestartPolicy()
        self.exits = {label: Exits() for label in stack.parts}
        self.due: dict[str, float] = {}  # label -> time.monotonic() its restart is due
        self.coming_up: set[str] = set()  # restarted, not answering yet
        self.stopping = False

    def request_stop(self) -> None:
        """Safe in a signal handler: the loop ends at its next look and restarts nothing."""
        self.stopping = True

    def run(self) -> str | None:
        """Watch until :meth:`request_stop` (None) or a part is given up (the line why)."""
        while not self.stopping:
            if (why := self.check(time.monotonic())) is not None:
                return why
            time.sleep(self.poll_s)
        return None

    def check(self, now: float) -> str | None:
        """One look at every part; the line why, if a part is given up."""
        for label, part in self.stack.parts.items():
            if self.stopping:
                return None
            if label in self.due:
                if now >= self.due[label] and (why := self._restart(label)) is not None:
                    return why
                continue
            code = part.proc.poll()
            if code is None:
                self._see_if_up(label, part)
                continue
            self.coming_up.discard(label)
            if (why := self._exited(label, part, code, now)) is not None:
                return why
        return None

    def _exited(self, label: str, part: Part, code: int, now: float) -> str | None:
        exits = self.exits.setdefault(label, Exits())
        uptime = now - part.started_at
        delay = after_exit(self.policy, exits, now, uptime)
        if delay is None:
            return (f"{label} exited {len(exits.times)} times within "
                    f"{self.policy.window_s:g} s (last: {describe_exit(code)}); giving up on "
                    f"it: see {part.log}")
        self.due[label] = now + delay
        self.say(f"{label} (pid {part.proc.pid}) exited: {describe_exit(code)} after "
                 f"{uptime:.0f} s up; log {part.log}; restart {exits.restarts} in {delay:g} s")
        return None

    def _restart(self, label: str) -> str | None:
        del self.due[label]
        try:
            proc = self.stack.respawn(label)
        except OSError as err:  # the interpreter or the log file went away: no retry helps
            return f"could not restart {label}: {err}"
        self.coming_up.add(label)
        self.say(f"{label} restarted (pid {proc.pid}, restart {self.exits[label].restarts})")
        return None

    def _see_if_up(self, label: str, part: Part) -> None:
        if label in self.coming_up and (part.health_url is None or
                                        answers(part.health_url, timeout=1.0)):
            self.coming_up.discard(label)
            self.say(f"{label} is up again" + (f" ({part.health_url})" if part.health_url
                                                else ""))
