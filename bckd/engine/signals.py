"""Stopping a job from its terminal or its supervisor: ``trainer.fit()`` runs off the main
thread, and SIGINT/SIGTERM end the MLflow run KILLED, then ask the workers to checkpoint."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

__all__ = ["FitThread", "fit_with_signals"]


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
    waiting up to ``grace_s``. A second signal exits immediately.

    Returns ``("FINISHED" or "KILLED", the finished thread)`` (its ``result`` or ``error``)."""
    from bckd.engine.tracking import write_run_json

    fit = FitThread(trainer)
    stopping: list[float] = []

    def on_signal(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
        if stopping:
            print("bckd: second stop signal, exiting now", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        stopping.append(time.monotonic())
        print(f"bckd: received {signal.Signals(signum).name}: the run ends KILLED; asking the "
              f"workers to checkpoint (up to {grace_s:.0f} s)", file=sys.stderr, flush=True)
        writer.terminate("KILLED")
        write_run_json(work_dir, status="KILLED")
        stop_flag.set.remote()

    in_main = threading.current_thread() is threading.main_thread()
    previous = {}
    if in_main:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        fit.start()
        while fit.is_alive():
            fit.join(timeout=0.5)
            if stopping and time.monotonic() - stopping[0] > grace_s:
                print("bckd: workers did not stop in time", file=sys.stderr, flush=True)
                break
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return ("KILLED" if stopping else "FINISHED"), fit
