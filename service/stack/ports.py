"""The embedded stack's ports: the checks before anything starts, and Ray's worker range.

The API's, the dashboard's and MLflow's ports are the config's; every other Ray port is a free
one. Before anything starts, :func:`check_ports` refuses a port that is no TCP port, one given
to two parts, or one already taken on the host. Ray's workers bind ports of a range (``ray
start``'s default 10002-19999); the stack gives Ray the longest run of that range that holds
none of its ports (:func:`worker_port_range`), so ``--dashboard-port 18265`` works and no
worker takes the API's or MLflow's port before they bind it.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.stack.embedded import StackConfig

__all__ = ["RAY_WORKER_PORTS", "PortError", "check_ports", "free_port", "own_ports",
           "spare_port", "worker_port_range"]

RAY_WORKER_PORTS = (10002, 19999)  # `ray start`'s default --min-worker-port/--max-worker-port


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PortError(ValueError):
    """A port of the :class:`StackConfig` field ``field`` that the stack cannot use; ``other``
    is the field that already has it, if that is the reason."""

    def __init__(self, field: str, port: int, reason: str, other: str | None = None):
        self.field, self.port, self.reason, self.other = field, port, reason, other
        super().__init__(self.describe())

    def describe(self, names: Mapping[str, str] | None = None) -> str:
        """One line, the fields as ``names`` calls them (``bckd serve``: its options)."""
        name = (names or {}).get
        why = self.reason if self.other is None else f"{self.reason} {name(self.other, self.other)}"
        return f"{name(self.field, self.field)} {self.port}: {why}"


def own_ports(cfg: StackConfig) -> dict[str, int]:
    """The ports the stack binds itself, by config field (a part it attaches to binds none)."""
    ports = {"api_port": cfg.api_port}
    if cfg.ray_address is None:
        ports["dashboard_port"] = cfg.dashboard_port
    if cfg.mlflow_uri is None:
        ports["mlflow_port"] = cfg.mlflow_port
    return ports


def check_ports(cfg: StackConfig) -> dict[str, int]:
    """:func:`own_ports`, or :class:`PortError` for the first that is no TCP port, repeats an
    earlier one or is already taken on ``cfg.host``."""
    ports = own_ports(cfg)
    seen: dict[int, str] = {}
    for name, port in ports.items():
        if not 1 <= port <= 65535:
            raise PortError(name, port, "not a TCP port (1-65535)")
        if port in seen:
            raise PortError(name, port, "the same port as", other=seen[port])
        seen[port] = name
        if not _bindable(cfg.host, port):
            raise PortError(name, port, f"already in use on {cfg.host}")
    return ports


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as s:
        # as the servers bind: a port whose last connection is in TIME_WAIT counts as free
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def worker_port_range(taken: Iterable[int],
                      ports: tuple[int, int] = RAY_WORKER_PORTS) -> tuple[int, int]:
    """The longest run ``(first, last)`` of ``ports`` that holds none of ``taken``.

    Ray refuses a dashboard port inside its worker range, and a worker may bind a port of the
    range that the API or MLflow is about to take; cutting the range around them avoids both.
    """
    lo, hi = ports
    cuts = sorted({p for p in taken if lo <= p <= hi})
    gaps = zip([lo - 1, *cuts], [*cuts, hi + 1], strict=True)  # (taken, next taken) neighbours
    below, above = max(gaps, key=lambda g: g[1] - g[0])
    return below + 1, above - 1


def spare_port(taken: set[int], avoid: tuple[int, int]) -> int:
    """A free port that is none of ``taken`` and outside ``avoid``; added to ``taken``."""
    for _ in range(100):
        port = free_port()
        if port not in taken and not avoid[0] <= port <= avoid[1]:
            taken.add(port)
            return port
    raise RuntimeError(f"no free port outside {avoid[0]}-{avoid[1]}: check "
                       "net.ipv4.ip_local_port_range")
