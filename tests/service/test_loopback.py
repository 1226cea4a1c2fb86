"""The embedded stack listens on loopback alone: every TCP socket that a process of the stack
(Ray's GCS, raylet, dashboard and its agents, workers, a job's driver; MLflow; the API) holds
in LISTEN state is bound to 127.0.0.1 or ::1, while a job runs.

The sockets are read from Linux's ``/proc`` (``ss -ltnp`` reads the same tables): the listening
sockets of ``/proc/net/tcp{,6}`` by inode, and each process's open sockets by ``/proc/<pid>/fd``;
the stack's processes are those of the sessions its parts were started in, and their
descendants (a process that left its session, as a job's driver does, still has its parent).
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

from service.stack.embedded import Stack
from tests.service.servicetools import finished, stand_in_stack, toy_dataset, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("loopback")
    data = toy_dataset(root)
    st = stand_in_stack(root, [data.parent])
    st.start()
    st.toy = data
    yield st
    st.stop()


def _listening() -> dict[int, tuple[str, int]]:
    """Socket inode -> (address, port) of every TCP socket in LISTEN state (``0A``)."""
    out = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] != "0A":
                continue
            hexip, hexport = cols[1].split(":")
            raw = bytes.fromhex(hexip)
            # the kernel prints each 32-bit word of the address in host (little-endian) order
            ip = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            out[int(cols[9])] = (str(ipaddress.ip_address(ip)), int(hexport, 16))
    return out


def _stat(pid: int) -> tuple[int, int, str] | None:
    """(parent pid, session id, name) of ``pid``; None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name, rest = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:]
    fields = rest.split()
    return int(fields[1]), int(fields[3]), name


def stack_listeners(stack: Stack) -> list[tuple[str, int, int, str]]:
    """(address, port, pid, process name) of each socket a process of the stack listens on."""
    procs = {int(p): s for p in os.listdir("/proc") if p.isdigit()
             if (s := _stat(int(p))) is not None}
    ours = {pid for pid, (_, sid, _) in procs.items()
            if sid in {part.proc.pid for part in stack.parts.values()}}
    grew = True
    while grew:  # descendants, whatever their session
        more = {pid for pid, (ppid, _, _) in procs.items() if ppid in ours} - ours
        ours |= more
        grew = bool(more)
    listening, found = _listening(), []
    for pid in ours:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and (inode := int(link[8:-1])) in listening:
                found.append((*listening[inode], pid, procs[pid][2]))
    return sorted(set(found))


def loopback(address: str) -> bool:
    """127.0.0.0/8 or ::1, also as an IPv6 socket's IPv4-mapped address (``::ffff:127.0.0.1``,
    which only 127.0.0.1 reaches; Python 3.11's ``is_loopback`` says no to it)."""
    ip = ipaddress.ip_address(address)
    return (getattr(ip, "ipv4_mapped", None) or ip).is_loopback


def test_every_listener_of_the_stack_is_on_loopback(stack, alice):
    r = alice.post("/v1/jobs", json={"kind": "train", "config": "toy_teacher",
                                     "data_root": str(stack.toy),
                                     "overrides": {"train_cfg.max_epochs": 8}})
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    wait_for(alice, job_id, lambda j: j["status"] == "RUNNING")
    found = stack_listeners(stack)
    ports = {port for _, port, _, _ in found}
    assert {stack.cfg.api_port, stack.cfg.dashboard_port, stack.cfg.mlflow_port} <= ports, found
    assert len({pid for _, _, pid, _ in found}) >= 5, found  # API, MLflow, GCS, raylet, agent
    off = [f for f in found if not loopback(f[0])]
    assert off == [], "\n".join(f"{a}:{p} {name} (pid {pid})" for a, p, pid, name in off)
    assert wait_for(alice, job_id, finished)["status"] == "SUCCEEDED"
