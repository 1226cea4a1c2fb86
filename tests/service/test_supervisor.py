"""The supervisor of ``bckd serve``: its restart policy as pure functions, then its loop over a
real :class:`Stack` whose parts are small real processes (an HTTP server, one that crashes), so
that each case takes a second, not a Ray start. The loop over the real Ray, MLflow and API is
``test_serve.py``'s (a killed API while a job runs)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from service.stack.embedded import Stack, StackConfig, free_port
from service.stack.supervisor import (
    Exits,
    RestartPolicy,
    Supervisor,
    after_exit,
    describe_exit,
    restart_delay,
)
from tests.service.servicetools import alive

POLICY = RestartPolicy()  # the defaults bckd serve runs with


def test_the_delay_doubles_from_one_second_up_to_its_cap():
    assert [restart_delay(POLICY, k) for k in range(8)] == [1, 2, 4, 8, 16, 30, 30, 30]
    assert restart_delay(POLICY, 10_000) == 30  # no float overflow after days of restarts


def test_exits_in_a_row_back_off_and_a_stable_run_starts_again_at_one_second():
    exits = Exits()
    delays = [after_exit(POLICY, exits, now, uptime=0.5) for now in (0.0, 2.0, 5.0)]
    assert delays == [1, 2, 4]
    # up 59 s, still in the streak; 3 exits are then within the minute, not yet 5
    assert after_exit(POLICY, exits, now=70.0, uptime=59.0) == 8
    # up 90 s: stable, so back to 1 s, and the window has forgotten the first exits
    assert after_exit(POLICY, exits, now=200.0, uptime=90.0) == 1
    assert exits.times == [200.0] and exits.restarts == 5


def test_five_exits_within_a_minute_give_up_and_slower_ones_never_do():
    fast = Exits()
    answers = [after_exit(POLICY, fast, now, uptime=1.0) for now in (0, 10, 20, 30, 59)]
    assert answers[:4] == [1, 2, 4, 8] and answers[4] is None
    slow = Exits()  # every 20 s: at most 3 within any minute
    assert all(after_exit(POLICY, slow, 20.0 * k, uptime=1.0) is not None for k in range(50))


def test_an_exit_code_in_words():
    assert describe_exit(3) == "exit code 3"
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_exit(0) == "exit code 0"


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


@pytest.fixture
def stack(tmp_path: Path):
    st = Stack(StackConfig(data_dir=tmp_path))
    yield st
    st.stop()


def test_a_part_that_keeps_crashing_is_given_up_naming_it_and_its_log(stack, tmp_path):
    steady = stack.spawn("steady", python("import time; time.sleep(120)"), dict(os.environ),
                         tmp_path / "steady.log")
    crash_log = tmp_path / "crasher.log"
    first = stack.spawn("crasher", python("import sys; print('boom'); sys.exit(3)"),
                        dict(os.environ), crash_log)
    said: list[str] = []
    policy = RestartPolicy(first_delay_s=0.05, max_delay_s=0.2)
    t0 = time.monotonic()
    why = Supervisor(stack, policy, say=said.append, poll_s=0.02).run()
    assert time.monotonic() - t0 < 20
    assert why == (f"crasher exited 5 times within 60 s (last: exit code 3); giving up on it: "
                   f"see {crash_log}"), said
    exited = [line for line in said if line.startswith("crasher (pid")]
    assert [line.split("; ", 2)[2] for line in exited] == [
        "restart 1 in 0.05 s", "restart 2 in 0.1 s", "restart 3 in 0.2 s", "restart 4 in 0.2 s"]
    assert all(" exited: exit code 3 after " in line and f" s up; log {crash_log};" in line
               for line in exited)
    pids = [int(line.split("pid ")[1].split(",")[0]) for line in said if "restarted" in line]
    assert len(set(pids)) == 4 and first.pid not in pids  # a new process each time
    log = crash_log.read_text()
    assert log.count("boom") == 5 and log.count("crasher restarted at") == 4
    # the other part kept running, untouched
    assert stack.parts["steady"].proc is steady and steady.poll() is None


def test_a_killed_server_comes_back_on_its_port_and_is_seen_answering(stack, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    first = stack.spawn("web", [sys.executable, "-m", "http.server", str(port), "--bind",
                                "127.0.0.1"], dict(os.environ), tmp_path / "web.log", url)
    said: list[str] = []
    sup = Supervisor(stack, RestartPolicy(first_delay_s=0.1), say=said.append, poll_s=0.05)
    watcher = threading.Thread(target=sup.run)
    watcher.start()
    try:
        time.sleep(0.3)
        assert said == []  # up since its first start: nothing to say
        os.kill(first.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while not any("is up again" in line for line in said) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sup.request_stop()
        watcher.join(10)
    assert not watcher.is_alive()
    assert said[0].startswith(f"web (pid {first.pid}) exited: killed by SIGKILL"), said
    assert said[1].startswith("web restarted (pid ") and said[2] == f"web is up again ({url})"
    assert stack.parts["web"].proc.pid != first.pid and stack.parts["web"].proc.poll() is None


def test_a_stop_request_restarts_nothing_and_the_stack_stops_last_started_first(stack,
                                                                                 tmp_path):
    for label in ("first", "second"):
        stack.spawn(label, python("import time; time.sleep(120)"), dict(os.environ),
                    tmp_path / f"{label}.log")
    stack.spawn("crasher", python("raise SystemExit(1)"), dict(os.environ),
                tmp_path / "crasher.log")
    said: list[str] = []
    sup = Supervisor(stack, RestartPolicy(first_delay_s=0.5), say=said.append, poll_s=0.02)
    watcher = threading.Thread(target=sup.run)
    watcher.start()
    deadline = time.monotonic() + 20
    while not said and time.monotonic() < deadline:
        time.sleep(0.02)
    sup.request_stop()  # the crasher's restart is due in 0.5 s: it must not come
    watcher.join(10)
    time.sleep(0.6)
    assert not watcher.is_alive() and len(said) == 1 and "restart 1 in 0.5 s" in said[0], said
    pids = [proc.pid for _, proc in stack.procs]
    stopped: list[str] = []
    stack.stop(said=stopped.append)
    assert stopped == ["crasher", "second", "first"] and stack.procs == []
    assert not any(alive(pid) for pid in pids)
