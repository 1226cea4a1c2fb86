"""``bckd serve``: the embedded stack (Ray head, MLflow server, the API) on this machine.

    bckd serve                                  # Ray + MLflow + API on loopback, Ctrl-C stops
                                                # (a part that exits is restarted: supervisor.py)
    bckd serve --port 8001 --dashboard-port 8266 --mlflow-port 5001
    bckd serve --ray-address http://head:8265 --mlflow-uri http://mlflow:5000   # attach
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

__all__ = ["add_parser", "ray_token_line"]


# StackConfig's port fields by the options that set them, for messages in the user's words
OPTIONS = {"api_port": "--port", "dashboard_port": "--dashboard-port",
           "mlflow_port": "--mlflow-port"}


def _serve(args: argparse.Namespace) -> int:
    from service.stack.embedded import PortError, Stack, StackConfig, check_ports
    from service.stack.ports import own_ports
    from service.stack.supervisor import Supervisor
    from service.stack.takeover import take_over

    cfg = StackConfig(
        data_dir=args.data_dir, host=args.host, api_port=args.port,
        dashboard_port=args.dashboard_port, mlflow_port=args.mlflow_port,
        num_cpus=args.num_cpus, ray_address=args.ray_address, mlflow_uri=args.mlflow_uri,
        database_url=args.database_url)
    # An earlier serve of this data dir: refused while its supervisor runs (StackBusy, a
    # ValueError: one line naming it), else what it left is stopped, before the ports are
    # checked, since its parts may hold them. Stack.start checks both too; here the messages
    # name our options.
    take_over(args.data_dir.resolve(), own_ports(cfg), _say, option=lambda f: OPTIONS.get(f, f))
    try:
        check_ports(cfg)
    except PortError as err:
        raise ValueError(err.describe(OPTIONS)) from None
    stack = Stack(cfg)
    stack.say = _say
    print("bckd serve: starting Ray, MLflow and the API ...", flush=True)
    phase = "starting"
    supervisor: Supervisor | None = None

    def on_signal(*_) -> None:
        # Starting: abort Stack.start (it stops what it started). Running: end the supervisor's
        # loop, then stop below. Stopping: a second Ctrl-C must not cut the stop short.
        nonlocal phase
        if phase == "starting":
            phase = "stopping"
            raise KeyboardInterrupt
        if supervisor is not None:
            supervisor.request_stop()

    for sig in (signal.SIGINT, signal.SIGTERM):  # also when started with SIGINT ignored (nohup, &)
        signal.signal(sig, on_signal)
    code = 0
    try:
        stack.start()
        print("\n".join(_started(stack)))
        print("Ctrl-C stops all of them; a part that exits is restarted.", flush=True)
        supervisor = Supervisor(stack, say=_say)
        phase = "running"
        if (why := supervisor.run()) is not None:
            _say(f"{why}; stopping")
            code = 1
    except KeyboardInterrupt:
        pass
    finally:
        phase = "stopping"
        print("bckd serve: stopping ...", flush=True)
        stack.stop(said=lambda label: print(f"bckd serve: {label} stopped", flush=True))
    return code


def _say(line: str) -> None:
    print(f"bckd serve: {line}", file=sys.stderr, flush=True)


def _started(stack) -> list[str]:
    """The start-up lines: where each part answers, where its secrets are."""
    lines = [f"  API:            {stack.api_url}   (docs: {stack.api_url}/docs)",
             f"  job page:       {stack.api_url}/watch   (users: log in with the API token)",
             f"  Ray dashboard:  {stack.ray_url}   (operator only)"]
    if stack.ray_token_file is not None:
        lines += [ray_token_line(stack.ray_token_file),
                  f"  Ray workers:    ports {stack.worker_ports[0]}-{stack.worker_ports[1]}"]
    else:
        lines.append("  Ray token:      the attached cluster's own (RAY_AUTH_TOKEN, "
                     "RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)")
    mlflow = (f"   (users: their own login, `bckd jobs mlflow-login`; admin login, operator "
              f"only: {stack.data_dir / 'mlflow_admin'})" if stack.mlflow_admin else "")
    return [*lines, f"  MLflow:         {stack.mlflow_url}{mlflow}",
            f"  admin token:    {stack.admin_token_file}",
            f"  logs:           {stack.data_dir / 'service-logs'}",
            "  processes:      " + ", ".join(f"{label} pid {proc.pid}"
                                             for label, proc in stack.procs)]


def ray_token_line(path: Path) -> str:
    """Where the Ray token is and how to use it; for the operator only: it can submit any
    command to Ray (docs/SERVICE.md, "Security model"), so `bckd jobs` never prints it. The
    dashboard asks once per browser ("Authentication Token Required") and keeps it in a
    cookie; the `ray get-auth-token` its prompt names reads ~/.ray/auth_token unless pointed
    at this file."""
    return (f"  Ray token:      {path}   (operator only, never a user's: paste its text when "
            f"the dashboard asks, or print it with RAY_AUTH_TOKEN_PATH={path} "
            "ray get-auth-token)")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``serve`` on the ``bckd`` parser's subcommands."""
    serve = sub.add_parser("serve", help="run Ray + MLflow + the REST API on this machine",
                           description="Start a local Ray head (with dashboard and token "
                           "auth), an MLflow server and the API, all on loopback; a part "
                           "that exits is restarted with backoff (given up after 5 exits "
                           "within a minute); Ctrl-C stops them. --ray-address/--mlflow-uri "
                           "attach to running ones. "
                           "Ports must differ and be free; Ray's workers get the ports "
                           "10002-19999 less the stack's own.")
    serve.add_argument("--data-dir", type=Path, default=Path(".bckd"),
                       help="state: database, tokens, MLflow store, logs (default .bckd)")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default loopback)")
    serve.add_argument("--port", type=int, default=8000, help="API port (8000)")
    serve.add_argument("--dashboard-port", type=int, default=8265, help="Ray dashboard (8265)")
    serve.add_argument("--mlflow-port", type=int, default=5000, help="MLflow port (5000)")
    serve.add_argument("--num-cpus", type=int, default=None, help="Ray CPUs (default: all)")
    serve.add_argument("--ray-address", default=None,
                       help="attach to this Ray dashboard URL instead of starting Ray")
    serve.add_argument("--mlflow-uri", default=None,
                       help="attach to this MLflow server instead of starting one")
    serve.add_argument("--database-url", default=None,
                       help="SQLAlchemy URL (default sqlite in --data-dir)")
    serve.set_defaults(handler=_serve)
