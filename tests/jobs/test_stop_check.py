"""The stop check never waits for the flag's actor, on a real local Ray cluster
(benchmarks/README.md, "Ray overhead and scaling"), and the flag's module stays light. That one
worker trains without DDP and several inside it is checked on the jobs of
tests/jobs/test_train.py."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import ray

from bckd.runtime.hooks import StopHook
from bckd.runtime.stop import StopRequested

pytestmark = pytest.mark.slow

@ray.remote(num_cpus=0)
class SlowFlag:
    """A stop flag whose every answer takes ``delay_s`` (a busy node, a remote actor)."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self._set = False
        self.questions = 0

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        self.questions += 1
        time.sleep(self.delay_s)
        return self._set

    def asked(self) -> int:
        return self.questions


def test_stop_check_never_waits_for_the_flag(cluster):
    flag = SlowFlag.remote(1.0)
    ray.get(flag.set.remote())
    hook = StopHook(flag, interval=1)
    runner = SimpleNamespace(iter=0, rank=0, world_size=1)
    start = time.monotonic()
    with pytest.raises(StopRequested):
        for step in range(100):
            t = time.monotonic()
            runner.iter = step
            hook.after_train_iter(runner, batch_idx=step)
            assert time.monotonic() - t < 0.5  # one answer takes 1 s: the check did not wait
            time.sleep(0.1)  # an iteration
    # the stop landed once the first answer came back, not many checks later
    assert time.monotonic() - start < 5.0


def test_unset_flag_never_stops(cluster):
    flag = SlowFlag.remote(0.0)
    hook = StopHook(flag, interval=2)
    runner = SimpleNamespace(iter=0, rank=0, world_size=1)
    for step in range(40):  # 20 checks, none of which may stop the run
        runner.iter = step
        hook.after_train_iter(runner, batch_idx=step)
        time.sleep(0.01)
    # the flag was really asked, again and again (a check that asked nothing never stops either)
    assert ray.get(flag.asked.remote()) >= 5
    # and the same hook still stops once the flag is set: the checks above were live
    ray.get(flag.set.remote())
    with pytest.raises(StopRequested):
        for step in range(40, 240):
            runner.iter = step
            hook.after_train_iter(runner, batch_idx=step)
            time.sleep(0.01)
    assert runner.iter < 60  # within a few checks of the set, not at the loop's end


def test_the_flag_actor_loads_ray_alone():
    # Each job starts the flag's actor in a process of its own, which imports the flag's module
    # while the workers import mmdet on the same cores: torch or mmengine there cost 3.4 s of CPU.
    code = ("import sys, bckd.runtime.stop\n"
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'mmengine'})\n"
            "assert not heavy, heavy\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
