"""Log streams against the real stack (uvicorn API, local Ray, MLflow, the stand-in job): an
owner's open streams hold no request thread, so another owner's requests are answered while
they stay open, and one owner may hold at most ``BCKD_MAX_LOG_STREAMS`` of them.

The API here has 8 request threads, so 23 pooled database connections (13 kept, 10 more on
demand), and lets an owner hold 30 streams: with streams that held a thread each (as before),
alice's 30 would take all 8, and with streams that held a connection each, all 23; either way
bob's requests would wait for her job to end (100 s) or for the pool's 30 s timeout and a 500.
How fast bob is answered under load is ``benchmarks/bench_service.py
--scenario streams``'s to measure; here he is answered at all.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.service.servicetools import (
    TOKENS,
    client,
    finished,
    stand_in_stack,
    toy_dataset,
    wait_for,
)

THREADS, CAP = 8, 30

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("streams")
    data = toy_dataset(root)
    st = stand_in_stack(root, [data.parent], BCKD_STOP_WAIT_S="10",
                        BCKD_REQUEST_THREADS=str(THREADS), BCKD_MAX_LOG_STREAMS=str(CAP))
    st.start()
    st.toy = data
    yield st
    st.stop()


def submit(c: httpx.Client, toy: Path, epochs: int) -> str:
    r = c.post("/v1/jobs", json={"kind": "train", "config": "toy_teacher",
                                 "data_root": str(toy),
                                 "overrides": {"train_cfg.max_epochs": epochs}})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_open_streams_hold_no_thread_and_are_capped_per_owner(stack, alice, bob):
    job_id = submit(alice, stack.toy, 100)  # 400 steps of 0.25 s
    wait_for(alice, job_id, lambda j: j["status"] == "RUNNING")
    url = f"/v1/jobs/{job_id}/logs/stream"
    with ExitStack() as held:
        streams = [held.enter_context(alice.stream("GET", url)) for _ in range(CAP)]
        assert [r.status_code for r in streams] == [200] * CAP
        # each follows the running job (read on, never closed: breaking out of httpx's
        # iter_text would close its connection, and so free its slot)
        readers = [streams[0].iter_text(), streams[-1].iter_text()]
        for chunks in readers:
            assert "step 1" in _until(chunks, "step 1")
        r = alice.get(url)
        assert r.status_code == 429 and f"BCKD_MAX_LOG_STREAMS={CAP}" in r.text, r.text
        # bob, while alice holds more streams than the API has threads: a thread held by
        # each stream would keep his requests waiting past this timeout (her job runs 100 s)
        quick = client(stack, TOKENS["bob"])
        quick.timeout = httpx.Timeout(30)
        listed = quick.get("/v1/jobs")
        assert listed.status_code == 200 and listed.json()["count"] == 0, listed.text
        bobs = submit(quick, stack.toy, 1)
        assert alice.get(f"/v1/jobs/{job_id}").json()["status"] == "RUNNING"
    # closed by alice: the API notices within a poll and frees each slot
    deadline = time.monotonic() + 20
    while (code := _stream_status(alice, url)) == 429 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert code == 200
    assert wait_for(bob, bobs, finished)["status"] == "SUCCEEDED"
    alice.post(f"/v1/jobs/{job_id}/cancel")


def _until(chunks: Iterator[str], text: str) -> str:
    """What ``chunks`` gave up to the chunk that holds ``text`` (all of it, if none did); the
    iterator stays open."""
    got = ""
    while text not in got and (chunk := next(chunks, None)) is not None:
        got += chunk
    return got


def _stream_status(c: httpx.Client, url: str) -> int:
    with c.stream("GET", url) as r:
        return r.status_code


def test_a_stream_ends_with_its_job_and_gives_its_slot_back(stack, alice):
    job_id = submit(alice, stack.toy, 1)
    texts = []
    for _ in range(CAP + 1):  # one more than the cap, one after the other
        with alice.stream("GET", f"/v1/jobs/{job_id}/logs/stream", timeout=120) as r:
            assert r.status_code == 200, r.read()
            texts.append("".join(r.iter_text()))
    assert "done FINISHED" in texts[0] and texts[-1] == texts[0]


def test_one_owners_burst_of_submissions_waits_its_turn_not_anothers(tmp_path, monkeypatch):
    """``max_submitting`` 1 (the real app in this process; Ray's stand-in holds the cluster's
    capacity call, the last step of a submission's work): while alice's first submission is
    held there, her second waits for her slot and never reaches Ray, and bob's goes through."""
    import threading

    from tests.service.inprocess import HeldRay, body, inprocess_api

    toy = toy_dataset(tmp_path)
    ray = HeldRay(hold="capacity")
    bob = {"Authorization": f"Bearer {TOKENS['bob']}"}
    with inprocess_api(monkeypatch, tmp_path, ray, [toy.parent],
                       BCKD_MAX_SUBMITTING="1") as (c, _):
        answers: dict[str, httpx.Response] = {}
        posts = [threading.Thread(target=lambda k=k: answers.update({k: c.post(
            "/v1/jobs", json=body(toy, name=k))})) for k in ("alice-1", "alice-2")]
        posts[0].start()
        assert ray.entered.wait(30)  # alice's first holds her one slot, in Ray's capacity
        posts[1].start()
        r = c.post("/v1/jobs", json=body(toy, name="bob-1"), headers=bob)
        assert r.status_code == 201, r.text  # bob's own slot: not behind alice's
        time.sleep(1.0)  # time enough for her second to reach Ray's capacity, were it let in
        assert ray.calls.count("capacity") == 2 and posts[1].is_alive()  # it waits its turn
        ray.release.set()
        for t in posts:
            t.join(30)
        assert [answers[k].status_code for k in ("alice-1", "alice-2")] == [201, 201], answers
