"""The stack's lock file, and a new ``bckd serve`` taking over from one whose supervisor died.

``Stack.start`` writes ``<data dir>/serve.json``: the supervisor's and each part's
:class:`Identity` (pid, start time from ``/proc/<pid>/stat``, command line), the ports, and
the Ray temp dir. ``Stack.respawn`` rewrites it, ``Stack.stop`` removes it. A pid alone names
nothing once its process has ended (the kernel hands it out again), so a process is taken to be
the recorded one only when all three agree.

Before a stack starts on a data dir, :func:`take_over` reads the file:

- its supervisor still alive: :class:`StackBusy`, one line naming it (its pid, its API, what to
  type to stop it), and the port it holds when the new stack asked for the same one;
- its supervisor gone: each recorded part that is still the recorded process is stopped as
  ``Stack.stop`` would (SIGTERM, then SIGKILL of its process group after a grace), then every
  process left of it: Ray's (their command lines name the stack's private Ray temp dir) and
  the job drivers (theirs name a job file under ``<data dir>/owners/``). One line each says
  what was found and done. The new stack then starts fresh; its jobs recover as after a
  SIGTERM of the old one (the reconciler finds them unknown to the new Ray: LOST, then
  restarted under ``max_restarts``).

Stopping, not adopting: a process cannot be re-parented to the new supervisor, so an adopted
part could be watched only by polling its pid, and its output would still go to the old log
handles. The parts normally die with their supervisor anyway (``Stack`` starts them with a
parent-death signal), so what is found here is what that left: a driver in its own session,
a Ray process that ignored the signal, a part whose SIGTERM shutdown hung.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["LOCK_FILE", "Identity", "StackBusy", "die_with", "read_lock", "remove_lock",
           "take_over", "write_lock"]

LOCK_FILE = "serve.json"


@dataclass(frozen=True)
class Identity:
    """A process as the kernel names it: its pid is reused, (pid, start time) never is."""

    pid: int
    start: int  # clock ticks after boot, field 22 of /proc/<pid>/stat
    cmdline: tuple[str, ...]

    @classmethod
    def of(cls, pid: int) -> Identity | None:
        """The process ``pid`` now; None when there is none (or it is a zombie)."""
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "; comm may hold spaces
        if fields[0] == "Z":
            return None
        return cls(pid, int(fields[19]), tuple(raw.decode(errors="replace").split("\0")[:-1]))

    def alive(self) -> bool:
        """Whether the recorded process still runs (not another one under its pid)."""
        return Identity.of(self.pid) == self


class StackBusy(ValueError):
    """The data dir's stack still has its supervisor: one line saying so."""


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def die_with(parent: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` by which the child gets SIGTERM when ``parent`` dies (Linux: the
    thread of ``parent`` that forked it; every part is started from the supervisor's one
    thread). ``ctypes`` is loaded before the fork: the child only calls into it."""
    if _prctl is None:
        return None

    def preexec() -> None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the prctl: no signal would come
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def write_lock(data_dir: Path, parts: Mapping[str, int], ports: Mapping[str, int],
               api_url: str, ray_tmp: str | None) -> None:
    """Record this process as the supervisor of ``parts`` (label -> pid) in ``data_dir``."""
    me = Identity.of(os.getpid())
    record = {"supervisor": asdict(me), "api_url": api_url, "ports": dict(ports),
              "ray_tmp": ray_tmp, "written_at": time.strftime("%F %T"),
              "parts": {label: asdict(i) for label, pid in parts.items()
                        if (i := Identity.of(pid)) is not None}}
    path = data_dir / LOCK_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(path)  # a reader never sees half a file


def read_lock(data_dir: Path) -> dict | None:
    try:
        record = json.loads((data_dir / LOCK_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "supervisor" in record else None


def remove_lock(data_dir: Path) -> None:
    """Remove the lock file if this process wrote it (a stack that never started leaves the
    one of the stack it found)."""
    record = read_lock(data_dir)
    if record is not None and _identity(record["supervisor"]) == Identity.of(os.getpid()):
        (data_dir / LOCK_FILE).unlink(missing_ok=True)


def _identity(d: Mapping) -> Identity:
    return Identity(int(d["pid"]), int(d["start"]), tuple(d["cmdline"]))


def take_over(data_dir: Path, ports: Mapping[str, int], say: Callable[[str], None],
              option: Callable[[str], str] = str, grace: float = 10.0) -> None:
    """Clear what an earlier stack of ``data_dir`` left (module doc), saying so in one line
    each; :class:`StackBusy` if its supervisor still runs. ``ports`` are the new stack's by
    config field, ``option`` names a field in the caller's words (``--port``)."""
    record = read_lock(data_dir)
    if record is None:
        return
    boss = _identity(record["supervisor"])
    if boss.pid == os.getpid():
        return  # this process's own stack (started, stopped and started again)
    if boss.alive():
        held = [f"{option(field)} {port}" for field, port in ports.items()
                if record.get("ports", {}).get(field) == port]
        what = f"{', '.join(held)}: already in use by" if held else "--data-dir: already used by"
        raise StackBusy(f"{what} the bckd serve of {data_dir} (pid {boss.pid}, API "
                        f"{record.get('api_url')}); stop it first: kill -INT {boss.pid}")
    say(f"the earlier bckd serve of this data dir (pid {boss.pid}, started "
        f"{record.get('written_at')}) is gone; clearing what it left")
    for label, d in record.get("parts", {}).items():
        part = _identity(d)
        if part.alive():
            how = _stop_group(part.pid, grace)
            say(f"  {label} (pid {part.pid}): still running without its supervisor; {how}")
        elif Identity.of(part.pid) is None and (rest := _members(part.pid)):
            # the leader ended but not its children (MLflow's server process, Ray's GCS):
            # its group's id is still the recorded pid, which no other process took
            for ident in rest:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(ident, signal.SIGKILL)
            say(f"  {label} (pid {part.pid}): ended, but not its children: killed pids "
                + ", ".join(map(str, rest)))
        else:
            say(f"  {label} (pid {part.pid}): already ended")
    marks = [str(data_dir.resolve() / "owners") + os.sep]
    if record.get("ray_tmp"):
        marks.append(record["ray_tmp"])
    if "ray" in record.get("parts", {}):  # only a stack that ran Ray owns its jobs' drivers
        left = [i for i in _processes() if any(m in arg for arg in i.cmdline for m in marks)]
        for ident in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(ident.pid, signal.SIGKILL)
        if left:
            say(f"  {len(left)} more of its processes (job drivers, Ray workers) killed: pids "
                + ", ".join(str(i.pid) for i in left))
        if record.get("ray_tmp"):
            shutil.rmtree(record["ray_tmp"], ignore_errors=True)
    (data_dir / LOCK_FILE).unlink(missing_ok=True)


def _stop_group(pid: int, grace: float) -> str:
    """SIGTERM the part (its own session's leader), SIGKILL its group after ``grace``."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and Identity.of(pid) is not None:
        time.sleep(0.2)
    how = "stopped (SIGTERM)"
    try:
        os.killpg(pid, signal.SIGKILL)  # what is left of its process group
        if Identity.of(pid) is not None:
            how = f"killed (SIGKILL after {grace:g} s)"
    except (ProcessLookupError, PermissionError):
        pass
    return how


def _members(pgid: int) -> list[int]:
    """The pids of the live processes of the process group ``pgid`` (not its zombies: a dead
    supervisor's children are reaped only if the machine's init reaps orphans)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                state, _, group = stat[stat.rindex(")") + 2:].split()[:3]
                if int(group) == pgid and state != "Z":
                    found.append(int(entry.name))
    return found


def _processes() -> Iterator[Identity]:
    """Every other process this user may see."""
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != me and \
                (ident := Identity.of(int(entry.name))) is not None:
            yield ident
