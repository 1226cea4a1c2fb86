"""Test-only probe of the jobs' sandbox (tests/jobs/test_sandbox.py); never on a production path.

Python imports ``sitecustomize`` at the start of every interpreter whose ``sys.path`` holds this
directory. The test puts it on the ``PYTHONPATH`` of the stack it starts, and with it
``BCKD_SANDBOX_PROBE``, the JSON file that names what to try. Ray's processes inherit both from
the head, so every Python process of the cluster (Ray's workers, the job supervisor, each job's
driver) tries to read those files as it starts and records what it got in
``<out>/<pid>-<ns>.json`` (a pid inside the sandbox may repeat one outside it).

Why a request cannot turn it on: this file is in ``tests/``, which no deployment's
``PYTHONPATH`` holds, and the stack's environment is the operator's (here, the test's). A
request reaches a job only as the job file's data (``bckd.config.jobfile``) and the fixed
variables of ``service.core.jobs.driver_env``; it names neither ``PYTHONPATH`` nor
``BCKD_SANDBOX_PROBE``. Without both, this module does nothing.
"""

import json
import os
import time
from pathlib import Path


def _try(path: str) -> str:
    """``read`` when the file (or a directory's listing) could be read, else the error."""
    try:
        if os.path.isdir(path):
            os.listdir(path)
        else:
            with open(path, "rb") as fh:
                fh.read(1)
    except OSError as err:
        return f"{type(err).__name__}: {err.strerror}"
    return "read"


def _probe(spec: Path) -> None:
    wanted = json.loads(spec.read_text())
    cmdline = Path("/proc/self/cmdline").read_bytes().decode(errors="replace").split("\0")
    record = {"pid": os.getpid(), "argv": cmdline[:-1],
              "reads": {name: _try(path) for name, path in wanted["read"].items()}}
    out = Path(wanted["out"]) / f"{os.getpid()}-{time.time_ns()}.json"
    out.with_suffix(".tmp").write_text(json.dumps(record))
    out.with_suffix(".tmp").replace(out)


if os.environ.get("BCKD_SANDBOX_PROBE"):
    _probe(Path(os.environ["BCKD_SANDBOX_PROBE"]))
