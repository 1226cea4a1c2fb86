"""Benchmark of one admission pass of the service's fair queue (``service.core.queue.admit``).

    python benchmarks/bench_queue.py                        # 10 owners x 30 queued: ~10 s
    python benchmarks/bench_queue.py --owners 50 --queued 30 --passes 50

A pass runs in every POST that makes a job and after each reconcile pass, holding the queue's
lock (the database's write lock on SQLite), so its time is added to a POST's latency and every
other writer waits for it. The database is a fresh SQLite file (WAL, as the service runs it)
holding ``--owners`` owners with ``--queued`` QUEUED jobs each, and one RUNNING job for each
owner but the last two; the cluster has exactly as many CPUs as the running jobs hold, so
nothing is admitted and the pass does all of its work: it counts the running jobs, puts every
queued job in the fair order and checks it. Two times are printed: the first pass, which
writes every job's position and reason (the worst case: a new owner's first job moves everyone
one place), and the median and max of the next ``--passes``, which find nothing changed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bckd.runtime.cluster import Capacity
from service.adapters.db import Job, migrate, session_scope, utcnow
from service.core.queue import admit
from service.core.states import JobStatus
from service.settings import Settings

REQUEST = {"kind": "train", "resources": {"num_workers": 1, "cpus_per_worker": 1.0,
                                          "gpus_per_worker": 0}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--owners", type=int, default=10)
    p.add_argument("--queued", type=int, default=30)  # per owner: the default max_queued
    p.add_argument("--passes", type=int, default=20)
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bench-queue-"))
    settings = Settings(data_dir=root / "state", data_roots=[root / "data"])
    migrate(settings.db_url)
    running = max(args.owners - 2, 0)
    for session in session_scope(settings):
        for o in range(args.owners):
            for k in range(args.queued + (o < running)):
                status = JobStatus.RUNNING if k == 0 and o < running else JobStatus.QUEUED
                session.add(Job(id=f"j-{o}-{k}", owner=f"user{o}", kind="train", name=f"{o}-{k}",
                                experiment="bench", config="c", request=REQUEST, entrypoint="x",
                                status=status, created_at=utcnow()))
        session.commit()
    full = Capacity(nodes=({"CPU": float(running)},))
    times = []
    for _ in range(args.passes + 1):
        for session in session_scope(settings):  # a session per pass, as the service's
            t0 = time.perf_counter()
            assert admit(session, full, settings) == []
            times.append(1e3 * (time.perf_counter() - t0))
    rest = times[1:]
    print(f"{args.owners} owners x {args.queued} queued, {running} running: first pass "
          f"{times[0]:.1f} ms (writes {args.owners * args.queued} positions); then median "
          f"{statistics.median(rest):.1f} ms, max {max(rest):.1f} ms over {len(rest)} passes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
