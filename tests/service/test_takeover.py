"""A stack whose supervisor died: its lock file, the parts found by identity and stopped, a
live one refused, and the parent-death signal that ends a part with its supervisor.

Real processes throughout (``sleep`` and small Pythons stand for the parts: what is tested is
how they are found and ended, not Ray or MLflow), in about 5 s.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from service.stack.takeover import LOCK_FILE, Identity, StackBusy, read_lock, take_over
from tests.service.servicetools import alive

ROOT = Path(__file__).resolve().parents[2]


def spawn(*argv: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True, **kw)


def gone(pid: int, timeout: float = 10.0) -> bool:
    """Whether ``pid`` has ended (or is a zombie) within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if Identity.of(pid) is None:
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def procs():
    started: list[subprocess.Popen] = []
    yield started
    for p in started:  # only what the test started, by pid
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def write_record(data_dir: Path, supervisor: Identity, parts: dict[str, Identity],
                 ports: dict[str, int], ray_tmp: str | None = None) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / LOCK_FILE).write_text(json.dumps({
        "supervisor": asdict(supervisor), "api_url": "http://127.0.0.1:1", "ports": ports,
        "ray_tmp": ray_tmp, "written_at": "2026-12-05 12:00:00",
        "parts": {label: asdict(i) for label, i in parts.items()}}))


def test_identity_is_pid_start_time_and_command_line():
    me = Identity.of(os.getpid())
    assert me.alive() and me.cmdline == tuple(Path("/proc/self/cmdline").read_text()
                                              .split("\0")[:-1])
    assert not replace(me, start=me.start - 1).alive()  # another process under this pid
    assert Identity.of(2 ** 22 + 1) is None  # above any pid_max


def test_a_dead_supervisors_parts_and_drivers_are_stopped_and_a_reused_pid_is_spared(
        tmp_path, procs):
    data_dir = tmp_path / "state"
    ray_tmp = tmp_path / "bckd-ray-x"
    ray_tmp.mkdir()
    boss = spawn(sys.executable, "-c", "pass")
    boss_id = Identity(boss.pid, 0, ())
    boss.wait()
    # a part still running; a part whose leader died but not its child; a driver of one of
    # the stack's jobs in a session of its own; a Ray process named by the temp dir
    part = spawn("sleep", "300")
    leader = spawn("sh", "-c", "sleep 300 & wait")
    driver = spawn(sys.executable, "-c", "import time; time.sleep(300)", "--spec",
                   str(data_dir.resolve() / "owners" / "alice" / "jobs" / "j.json"))
    raylet = spawn("sleep", "301", cwd=ray_tmp)  # its cwd, not its command line: spared
    gcs = spawn("/bin/sh", "-c", f"sleep 302; : {ray_tmp}")
    stranger = spawn("sleep", "303")  # in no record
    procs.extend([part, leader, driver, raylet, gcs, stranger])
    time.sleep(0.5)  # the shells have started their sleeps
    ids = {p.pid: Identity.of(p.pid) for p in (part, leader, driver, gcs, stranger)}
    assert all(ids.values()), ids
    child = next(int(c) for c in Path(f"/proc/{leader.pid}/task/{leader.pid}/children")
                 .read_text().split())
    os.kill(leader.pid, signal.SIGKILL)
    leader.wait()
    me = Identity.of(os.getpid())
    write_record(data_dir, boss_id,
                 {"ray": ids[part.pid], "mlflow": Identity(leader.pid, 1, ("sh",)),
                  "api": replace(me, start=me.start + 1)},  # this pid, another process
                 {"api_port": 1}, str(ray_tmp))
    said: list[str] = []
    take_over(data_dir, {"api_port": 1}, said.append, grace=2.0)

    assert said[0].startswith(f"the earlier bckd serve of this data dir (pid {boss.pid}, "
                              "started 2026-12-05 12:00:00) is gone")
    assert said[1] == f"  ray (pid {part.pid}): still running without its supervisor; " \
                      "stopped (SIGTERM)"
    assert said[2] == f"  mlflow (pid {leader.pid}): ended, but not its children: killed " \
                      f"pids {child}"
    assert said[3] == f"  api (pid {os.getpid()}): already ended"
    assert said[4].startswith("  2 more of its processes (job drivers, Ray workers) killed: ")
    assert set(said[4].split("pids ")[1].split(", ")) == {str(driver.pid), str(gcs.pid)}
    assert len(said) == 5
    for p in (part, driver, gcs):
        p.wait(10)
    assert gone(child) and alive(os.getpid())
    assert raylet.poll() is None and stranger.poll() is None  # not the stack's: untouched
    assert not (data_dir / LOCK_FILE).exists() and not ray_tmp.exists()


def test_a_stack_whose_supervisor_runs_is_refused_naming_it_and_the_port(tmp_path, procs):
    boss = spawn("sleep", "300")
    procs.append(boss)
    time.sleep(0.2)
    data_dir = tmp_path / "state"
    write_record(data_dir, Identity.of(boss.pid), {}, {"api_port": 8123, "mlflow_port": 5123})
    with pytest.raises(StackBusy) as err:
        take_over(data_dir, {"api_port": 8123, "mlflow_port": 5999}, print,
                  option={"api_port": "--port"}.get)
    assert str(err.value) == (f"--port 8123: already in use by the bckd serve of {data_dir} "
                              f"(pid {boss.pid}, API http://127.0.0.1:1); stop it first: "
                              f"kill -INT {boss.pid}")
    assert read_lock(data_dir) is not None and boss.poll() is None  # nothing touched
    # the command: one line, exit 2, before any port is bound; the port named when it is the
    # old stack's, the data dir when only that is shared
    for port, held in ((8123, "--port 8123: already in use by"), (8124, "--data-dir: already "
                                                                        "used by")):
        r = subprocess.run([sys.executable, "-m", "cli", "serve", "--data-dir", str(data_dir),
                            "--port", str(port), "--dashboard-port", "8125", "--mlflow-port",
                            "8126"], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert (r.returncode, r.stdout) == (2, "")
        assert r.stderr == (f"bckd: error: {held} the bckd serve of {data_dir.resolve()} (pid "
                            f"{boss.pid}, API http://127.0.0.1:1); stop it first: kill -INT "
                            f"{boss.pid}\n")


PARENT = """
import sys, time
from pathlib import Path
from service.stack.embedded import Part, _launch
part = Part("sleeper", ["sleep", "300"], {}, Path(sys.argv[1]))
print(_launch(part).pid, flush=True)
time.sleep(300)
"""


def test_a_part_gets_sigterm_when_its_supervisor_is_killed(tmp_path, procs):
    parent = spawn(sys.executable, "-c", PARENT, str(tmp_path / "log"), cwd=ROOT,
                   stdout=subprocess.PIPE, text=True)
    procs.append(parent)
    child = int(parent.stdout.readline())
    assert Identity.of(child) is not None
    os.kill(parent.pid, signal.SIGKILL)  # as the OOM killer would
    parent.wait()
    assert gone(child, timeout=10), f"pid {child} outlived its supervisor"
