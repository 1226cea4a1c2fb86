"""The API's docs pages (``/docs`` Swagger UI, ``/redoc`` ReDoc) render offline: their assets
ship with the installation (fastapi-offline) and the browser fetches nothing off the machine.

The real API under uvicorn on loopback, loaded in headless Chromium (Debian's ``chromium``,
installed by scripts/setup.sh). Only the API runs: the docs need neither Ray nor MLflow, so the
stack attaches to addresses where nothing listens and the reconciler is off.

Chromium writes every request it makes to a net log (``--log-net-log``); the page's own requests
are those keyed by the page's site (``network_isolation_key``), while the browser's background
traffic (update checks, account look-ups) has other keys and is left out.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from service.stack.embedded import Stack, StackConfig, free_port

# Each page's route list: an operation of POST /v1/jobs (operationId ``submit``) as the
# page's own renderer marks it in the DOM.
PAGES = {
    "/docs": 'id="operations-jobs-submit"',  # Swagger UI: operations-<tag>-<operationId>
    "/redoc": 'data-section-id="tag/jobs/operation/submit"',  # ReDoc: its menu's anchors
}
LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "::1"}


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens: Ray and MLflow are not needed
    st = Stack(StackConfig(data_dir=tmp_path_factory.mktemp("docs") / "state",
                           api_port=free_port(), ray_address=nowhere, mlflow_uri=nowhere,
                           extra_env={"BCKD_RUN_RECONCILER": "false"}))
    st.start()
    yield st
    st.stop()


def chromium() -> str:
    exe = shutil.which("chromium")
    assert exe, "chromium not found: scripts/setup.sh installs it (apt-get install chromium)"
    return exe


def render(url: str, work: Path) -> tuple[str, list[str]]:
    """The DOM of ``url`` once its scripts ran (10 s of virtual time; a page that waits on the
    network holds the clock), and the URLs the page requested, in order."""
    net_log = work / "net.json"
    r = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={work / 'profile'}", f"--log-net-log={net_log}",
         # the browser's own form-filling look-ups are made in the page's name; not the page's
         "--disable-features=AutofillServerCommunication",
         "--virtual-time-budget=10000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout, page_requests(json.loads(net_log.read_text()), url)


def page_requests(log: dict, url: str) -> list[str]:
    """URLs of the requests Chromium's net log files under the site of ``url``."""
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    site = "http://" + urlsplit(url).hostname  # a site is scheme + host, without the port
    return [e["params"]["url"] for e in log["events"]
            if e["type"] == start_job and "url" in e.get("params", {})
            and e["params"].get("network_isolation_key", "").split(" ")[0] == site]


@pytest.mark.parametrize("path", sorted(PAGES))
def test_docs_page_lists_the_routes_and_loads_only_from_loopback(api, path, tmp_path):
    dom, requested = render(api.api_url + path, tmp_path)
    assert PAGES[path] in dom, dom[-3000:]
    assert f"{api.api_url}/openapi.json" in requested, requested  # the route list came from it
    off_machine = [u for u in requested if urlsplit(u).hostname not in LOOPBACK]
    assert off_machine == [], off_machine


@pytest.mark.parametrize("path", sorted(PAGES))
def test_served_docs_html_names_local_assets_only(api, path):
    r = httpx.get(api.api_url + path)
    assert r.status_code == 200
    refs = re.findall(r'(?:src|href)="([^"]*)"', r.text)
    assert refs and all(ref.startswith("/") and not ref.startswith("//") for ref in refs), refs
    for ref in refs:  # and each is really there
        assert httpx.get(api.api_url + ref).status_code == 200, ref
    assert "'self'" in r.headers["content-security-policy"]
