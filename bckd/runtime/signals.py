"""Stopping a job from its terminal or its supervisor (SIGINT, SIGTERM).

While the driver sets the job up (checks, Ray, MLflow), a signal raises :class:`JobStopped`
where it is (:func:`stop_raises`): nothing has run that could be saved, and the caller ends
what it opened KILLED. Once training is handed to Ray, ``trainer.fit()`` runs off the main
thread and a signal ends the MLflow run KILLED, then asks the workers to checkpoint
(:func:`fit_with_signals`)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["FitThread", "JobStopped", "NOTHING_TO_SAVE", "fit_with_signals", "stop_raises"]

NOTHING_TO_SAVE = "before training began: nothing to checkpoint"  # said by either stop path
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class JobStopped(Exception):  # noqa: N818 - a request, not an error
    """SIGINT or SIGTERM before training was handed to Ray; ``str()`` is the signal's name."""


@contextmanager
def stop_raises() -> Iterator[None]:
    """Within the block (on the main thread only), SIGINT and SIGTERM raise :class:`JobStopped`
    where the driver is, as Python's own SIGINT does, but for both signals and by a name the
    job catches; :func:`fit_with_signals` takes them over while it runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
        raise JobStopped(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class FitThread(threading.Thread):
    """``trainer.fit()`` off the main thread, so the main thread can handle SIGINT/SIGTERM
    (Ray only installs its own SIGINT handler when ``fit`` runs on the main thread)."""

    def __init__(self, trainer) -> None:
        super().__init__(name="bckd-fit", daemon=True)
        self.trainer = trainer
        self.result = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.trainer.fit()
        except BaseException as err:  # noqa: BLE001 - handed to the main thread
            self.error = err


def fit_with_signals(trainer, stop_flag, writer, work_dir: Path,
                     grace_s: float) -> tuple[str, FitThread]:
    """Run ``trainer.fit()``; on SIGINT/SIGTERM end the MLflow run KILLED at once (the job
    supervisor may SIGKILL a few seconds later), then ask the workers to checkpoint and stop,
    waiting up to ``grace_s``, or not at all when training had not begun (nothing to save:
    :class:`~bckd.runtime.stop.StopFlag`). A second signal exits immediately.

    Returns ``("FINISHED" or "KILLED", the finished thread)`` (its ``result`` or ``error``)."""
    from bckd.tracking.runs import write_run_json

    fit = FitThread(trainer)
    stopping: list[float] = []
    asked: list = []  # the flag's answer on its way: had training begun?

    def on_signal(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
        if stopping:
            print("bckd: second stop signal, exiting now", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        stopping.append(time.monotonic())
        print(f"bckd: received {signal.Signals(signum).name}: the run ends KILLED; asking the "
              f"workers to checkpoint (up to {grace_s:.0f} s)", file=sys.stderr, flush=True)
        writer.terminate("KILLED")
        write_run_json(work_dir, status="KILLED")
        asked.append(stop_flag.set.remote())  # answered in the loop below, not in a handler

    in_main = threading.current_thread() is threading.main_thread()
    previous = {}
    if in_main:
        for sig in STOP_SIGNALS:
            previous[sig] = signal.signal(sig, on_signal)
    try:
        fit.start()
        while fit.is_alive():
            fit.join(timeout=0.5)
            if asked and not _training_began(asked.pop()):
                print(f"bckd: stopped {NOTHING_TO_SAVE}", file=sys.stderr, flush=True)
                break
            if stopping and time.monotonic() - stopping[0] > grace_s:
                print("bckd: workers did not stop in time", file=sys.stderr, flush=True)
                break
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return ("KILLED" if stopping else "FINISHED"), fit


def _training_began(answer, timeout_s: float = 10.0) -> bool:
    """The stop flag's answer; True (wait for the stop checkpoint) if it does not come."""
    import ray

    try:
        return bool(ray.get(answer, timeout=timeout_s))
    except Exception:  # noqa: BLE001 - an unreachable flag: keep the graceful path
        return True
