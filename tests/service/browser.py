"""A real browser for the tests: headless Chromium (Debian's ``chromium``, installed by
scripts/setup.sh) driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
the browser reads commands on fd 3 and writes answers and events on fd 4, each a JSON object
ended by a NUL byte), so it needs no WebDriver and no websocket library.

:class:`Browser` opens one tab, navigates, evaluates JavaScript in the page and waits for a
condition; :meth:`Browser.login_basic` answers HTTP basic-auth challenges (MLflow's login)
with a user's name and password, as a person typing them into the browser's dialog would.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

__all__ = ["Browser", "chromium"]


def chromium() -> str:
    exe = shutil.which("chromium")
    assert exe, "chromium not found: scripts/setup.sh installs it (apt-get install chromium)"
    return exe


class Browser:
    def __init__(self, work: Path, timeout: float = 60.0):
        self.timeout = timeout
        to_browser, self._w = os.pipe()  # the browser's fd 3
        self._r, from_browser = os.pipe()  # the browser's fd 4

        def fds() -> None:  # in the child, before its exec
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)

        self.proc = subprocess.Popen(  # noqa: PLW1509 - only dup2 runs before exec
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--remote-debugging-pipe", f"--user-data-dir={work / 'profile'}",
             "--disable-features=AutofillServerCommunication", "about:blank"],
            pass_fds=(3, 4), preexec_fn=fds, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        os.close(to_browser)
        os.close(from_browser)
        self._buf = b""
        self._next = 0
        self._auth: tuple[str, str] | None = None
        self.session = None
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target,
                                                           "flatten": True})["sessionId"]
        self.send("Page.enable")
        self.send("Runtime.enable")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        os.close(self._w)
        os.close(self._r)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- the protocol --------------------------------------------------------------------

    def _write(self, method: str, params: dict | None) -> int:
        self._next += 1
        msg = {"id": self._next, "method": method, "params": params or {}}
        if self.session is not None:
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        return self._next

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise TimeoutError("the browser did not answer")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise RuntimeError(f"the browser exited ({self.proc.poll()})")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict | None = None) -> dict:
        """Send a command to the tab (or the browser, before it has one); its result."""
        want = self._write(method, params)
        deadline = time.monotonic() + self.timeout
        while True:
            msg = self._read(deadline)
            if msg.get("id") == want:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self._event(msg["method"], msg.get("params", {}))

    def _event(self, method: str, params: dict) -> None:
        # answered without waiting: the answer's own reply is read (and dropped) later
        if method == "Fetch.requestPaused":
            self._write("Fetch.continueRequest", {"requestId": params["requestId"]})
        elif method == "Fetch.authRequired" and self._auth is not None:
            user, password = self._auth
            self._write("Fetch.continueWithAuth", {
                "requestId": params["requestId"],
                "authChallengeResponse": {"response": "ProvideCredentials", "username": user,
                                          "password": password}})

    # --- what a test does ----------------------------------------------------------------

    def login_basic(self, user: str, password: str) -> None:
        """Answer every basic-auth challenge from now on with ``user`` and ``password``."""
        self._auth = (user, password)
        self.send("Fetch.enable", {"handleAuthRequests": True, "patterns": [{"urlPattern": "*"}]})

    def goto(self, url: str) -> None:
        self.send("Page.navigate", {"url": url})

    def eval(self, expression: str):
        """The value of ``expression`` in the page (a promise is awaited)."""
        r = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                           "awaitPromise": True})
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait(self, expression: str, timeout: float = 60.0):
        """The value of ``expression`` once it is truthy; fails after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            try:
                value = self.eval(expression)
            except RuntimeError:  # the page is navigating
                value = None
            if value:
                return value
            time.sleep(0.2)
        text = self.eval("document.body ? document.body.innerText : ''")
        raise AssertionError(f"never true in the page: {expression}\n{text[-2000:]}")
