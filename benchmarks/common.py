"""Helpers shared by the benchmark scripts: machine and load report, timing, tables, JSON.

Every benchmark records the 1-minute load average at its start and end: on a shared machine the
cores may be busy with other processes, and numbers measured above ``BUSY_LOAD_PER_CORE`` times
the cores are marked.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "BUSY_LOAD_PER_CORE",
    "RESULTS",
    "finish_machine",
    "is_busy",
    "machine_info",
    "percentile",
    "print_table",
    "summarize",
    "timed",
    "write_json",
]

RESULTS = Path(__file__).resolve().parent / "results"
# 1-min load average per core above which a machine counts as busy: 2.5 on the 2-core machines
# here; 20 on a 16-core GPU host, where a finished 16-job build leaves a load of 7 decaying.
BUSY_LOAD_PER_CORE = 1.25


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """What the numbers came from; ``load_avg_1min_start`` is read now."""
    info: dict[str, Any] = dict(
        device=device,
        cpu=platform.processor() or platform.machine(),
        cpu_model=cpu_model(),  # two machines of one kind here differed (Xeon, AMD EPYC)
        cpu_count=os.cpu_count(),
        python=platform.python_version(),
        load_avg_1min_start=round(os.getloadavg()[0], 2),
        started=time.strftime("%Y-%m-%d %H:%M"),
        command=" ".join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]]),
    )
    if "torch" in sys.modules:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if device.startswith("cuda") and torch.cuda.is_available():
            info["device"] = torch.cuda.get_device_name(torch.device(device))
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    return info


def is_busy(machine: dict[str, Any]) -> bool:
    """Whether either end's load average was above ``BUSY_LOAD_PER_CORE`` x the machine's cores."""
    load = max(machine["load_avg_1min_start"], machine["load_avg_1min_end"])
    return load > BUSY_LOAD_PER_CORE * machine["cpu_count"]


def finish_machine(info: dict[str, Any]) -> dict[str, Any]:
    """Add ``load_avg_1min_end`` and ``busy`` (:func:`is_busy`); print them."""
    info["load_avg_1min_end"] = round(os.getloadavg()[0], 2)
    info["busy"] = is_busy(info)
    note = (f": BUSY (> {BUSY_LOAD_PER_CORE * info['cpu_count']:g}), other processes shared the "
            "cores, so times are inflated and ratios less reliable" if info["busy"] else ": quiet")
    print(f"load average (1 min) {info['load_avg_1min_start']} -> {info['load_avg_1min_end']} "
          f"on {info['cpu_count']} cores{note}", flush=True)
    return info


def timed(fn: Callable[[], Any], sync: Callable[[], None] | None = None) -> tuple[float, float]:
    """(wall, process CPU) seconds of one call of ``fn``; ``sync`` waits for a device."""
    if sync is not None:
        sync()
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    if sync is not None:
        sync()
    return time.perf_counter() - wall, time.process_time() - cpu


def summarize(samples: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """Median wall and CPU milliseconds of (wall_s, cpu_s) samples, and all samples."""
    wall, cpu = zip(*samples, strict=True)
    return dict(wall_ms=1e3 * statistics.median(wall), cpu_ms=1e3 * statistics.median(cpu),
                wall_ms_all=[round(1e3 * t, 2) for t in wall],
                cpu_ms_all=[round(1e3 * t, 2) for t in cpu])


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by the nearest-rank method (an observed value)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = ".1f") -> str:
    """Print (and return) a plain text table; floats use ``fmt``, the first column is left."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "-" if math.isnan(v) else format(v, fmt)
        return str(v)

    text_rows = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text_rows)) if text_rows else len(h)
              for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w)
                       for i, (h, w) in enumerate(zip(headers, widths, strict=True)))]
    lines.append("  ".join("-" * w for w in widths))
    for r in text_rows:
        lines.append("  ".join(v.ljust(w) if i == 0 else v.rjust(w)
                               for i, (v, w) in enumerate(zip(r, widths, strict=True))))
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def write_json(path: Path, report: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {path}", flush=True)
    return path
