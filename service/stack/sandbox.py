"""The jobs' sandbox in the embedded stack: the Ray head runs in a bubblewrap view of the machine
that holds none of the service's secrets, and so does every process it starts (Ray's job
supervisor, each job's driver, every Ray worker).

The view (:func:`bwrap_argv`): the host's file system read-only, with

- the service's data dir replaced by an empty tmpfs, and only its ``owners/`` bound back
  read-write: no tokens file, database, admin token, Ray token file, MLflow store, service logs
  or lock file;
- any other secret file named by the caller (a tokens file outside the data dir) hidden;
- ``/tmp`` (Ray's sockets and session dir live there), the torch hub cache and ``owners/``
  writable;
- its own PID namespace and ``/proc``: the service's processes are not there, so nothing in the
  sandbox can reach their files through ``/proc/<pid>/root``, ``fd`` or ``environ`` (all
  open to the same user otherwise);
- no capabilities (as root it could otherwise unmount the tmpfs), a minimal ``/dev`` (the host's
  disks are not there to read raw) plus the GPUs' device nodes.

Stopping it: bwrap does not pass a SIGTERM on, it dies of it, and every process of the sandbox is
then killed (SIGKILL): Ray's head stops at once, not in order, which ends its jobs the same way.

Why the whole cluster and not each job, and what a job that runs code can still do:
docs/SERVICE.md, "Security model". ``BCKD_JOB_SANDBOX=off`` runs Ray unconfined, for a stack
whose container is the boundary; with the default (``bwrap``) a stack where bubblewrap cannot
run refuses to start (:class:`SandboxUnavailable`).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = ["SANDBOX_VAR", "SandboxUnavailable", "bwrap_argv", "confine", "sandbox_mode",
           "torch_hub_dir"]

SANDBOX_VAR = "BCKD_JOB_SANDBOX"
MODES = ("bwrap", "off")
# GPU device nodes a job's workers open (NVIDIA's, and DRM for other vendors); the rest of the
# host's /dev (disks, above all) stays out of the view.
GPU_DEVICES = ("/dev/nvidia*", "/dev/nvidia-caps", "/dev/dri", "/dev/kfd")


class SandboxUnavailable(RuntimeError):
    """bubblewrap cannot run here, and the operator did not allow unsandboxed jobs."""


def sandbox_mode(env: Mapping[str, str]) -> str:
    """``bwrap`` (the default) or ``off``, from :data:`SANDBOX_VAR` in ``env``."""
    mode = env.get(SANDBOX_VAR, "").strip().lower() or "bwrap"
    if mode not in MODES:
        raise ValueError(f"{SANDBOX_VAR}={env[SANDBOX_VAR]!r}: use bwrap (the default: jobs "
                         "run in a bubblewrap sandbox) or off (no sandbox: only where the "
                         "container around the stack is the jobs' boundary)")
    return mode


def bwrap_argv(argv: list[str], state_dir: Path, hidden: Iterable[Path] = (),
               writable: Iterable[Path] = (), bwrap: str = "bwrap") -> list[str]:
    """``argv`` run by bubblewrap in the view described in the module's docstring.

    ``state_dir`` is the service's data dir (it must exist); ``hidden`` are files or dirs
    outside it to hide as well (those that do not exist are skipped); ``writable`` are existing
    dirs bound back read-write, besides ``/tmp`` and ``<state_dir>/owners``.
    """
    state = state_dir.resolve()
    owners = state / "owners"
    # --die-with-parent: the sandbox ends with bwrap's own process, which is what the stack
    # signals (a SIGTERM of it alone, a supervisor's parent-death signal: service.stack.takeover);
    # without it, the namespace's init and Ray ran on after bwrap's end
    cmd = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--unshare-pid", "--die-with-parent",
           "--proc", "/proc", "--bind", "/tmp", "/tmp"]
    for pattern in GPU_DEVICES:
        for dev in sorted(glob.glob(pattern)):
            cmd += ["--dev-bind", dev, dev]
    for path in writable:
        cmd += ["--bind", str(path), str(path)]
    # after /tmp's bind: a data dir under /tmp (a test's) is hidden too
    cmd += ["--tmpfs", str(state), "--bind", str(owners), str(owners)]
    for path in hidden:
        path = path.resolve()
        if path.is_relative_to(state) or not path.exists():
            continue
        cmd += ["--tmpfs", str(path)] if path.is_dir() else ["--ro-bind", "/dev/null", str(path)]
    return [*cmd, "--cap-drop", "ALL", "--", *argv]


def confine(argv: list[str], env: dict[str, str], state_dir: Path, hidden: Iterable[Path] = ()
            ) -> tuple[list[str], dict[str, str]]:
    """The Ray head's command line and environment, sandboxed as :data:`SANDBOX_VAR` says.

    Sandboxed, Ray reads its token from ``RAY_AUTH_TOKEN`` instead of the file named by
    ``RAY_AUTH_TOKEN_PATH``, which is in the data dir and so not in the view. Raises
    :class:`SandboxUnavailable` when bubblewrap is missing or cannot make the view here (no
    user namespaces for an unprivileged user, a seccomp profile that forbids mounts).
    """
    if sandbox_mode(env) == "off":
        return argv, env
    state_dir.joinpath("owners").mkdir(parents=True, exist_ok=True)
    bwrap = shutil.which("bwrap", path=env.get("PATH"))
    fix = (f"install bubblewrap (apt-get install bubblewrap), or, only where a container "
           f"around this stack is the jobs' boundary, set {SANDBOX_VAR}=off")
    if bwrap is None:
        raise SandboxUnavailable(f"jobs run in a bubblewrap sandbox, but bwrap is not on PATH: "
                                 f"{fix}")
    hub = torch_hub_dir(env)  # where a job downloads a model zoo teacher
    hub.mkdir(parents=True, exist_ok=True)
    writable = [hub]
    probe = subprocess.run(bwrap_argv(["true"], state_dir, hidden, writable, bwrap),
                           capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        raise SandboxUnavailable(f"bwrap cannot make the jobs' sandbox here "
                                 f"({probe.stderr.strip() or probe.returncode}): {fix}")
    env = dict(env)
    token_path = env.pop("RAY_AUTH_TOKEN_PATH", None)
    if token_path:
        env["RAY_AUTH_TOKEN"] = Path(token_path).read_text().strip()
    return bwrap_argv(argv, state_dir, hidden, writable, bwrap), env


def torch_hub_dir(env: Mapping[str, str]) -> Path:
    """Where a job's workers cache downloaded checkpoints (torch.hub's rule, without torch)."""
    home = env.get("TORCH_HOME") or os.path.join(
        env.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch")
    return Path(home)
