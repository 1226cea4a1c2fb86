"""Write the measured tables into the docs from the JSON they came from, or check that they match.

    python benchmarks/tables.py           # rewrite every marked block of the docs below
    python benchmarks/tables.py --check   # exit 1 naming each block that differs from its JSON

A block is the text between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` in
``README.md`` or ``benchmarks/README.md``; NAME is a key of ``BLOCKS``. Its text is generated
from ``benchmarks/results/<json>`` alone (the command, machine and load, the printed table, the
verdict), so a number in the docs can only come from a file a benchmark wrote. Prose around the
blocks is left alone. The benchmark scripts never edit the docs themselves: a run on a
developer's laptop should not rewrite the README until someone chooses to.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from common import RESULTS, is_busy

ROOT = Path(__file__).resolve().parents[1]
DOCS = (ROOT / "README.md", ROOT / "benchmarks" / "README.md")
# block name -> (JSON file under results/, the script that writes it)
BLOCKS = {
    "losses": ("losses.json", "bench_losses.py"),
    "step": ("step.json", "bench_step.py"),
    "losses_cuda": ("losses_cuda.json", "bench_losses.py"),  # these three: benchmarks/cuda/run.sh
    "step_cuda": ("step_cuda.json", "bench_step.py"),
    "step_cuda_bf16": ("step_cuda_bf16.json", "bench_step.py"),
    "ray": ("ray.json", "bench_ray.py"),
    "service": ("service.json", "bench_service.py"),
    "reproduction": ("reproduction.json", "reproduce.py"),
}
# the "goals" block: one verdict line each
GOALS = ("losses", "step", "losses_cuda", "step_cuda", "ray", "service")
_BLOCK = re.compile(r"(<!-- bench:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /bench:(?P=name) -->)",
                    re.DOTALL)


def _load(name: str, results: Path) -> dict:
    path = results / BLOCKS[name][0]
    if not path.is_file():
        raise SystemExit(f"{path} does not exist: run `python benchmarks/{BLOCKS[name][1]}` "
                         f"to write it, or remove the block bench:{name} from the docs")
    return json.loads(path.read_text())


def _provenance(name: str, report: dict) -> str:
    """``python benchmarks/x.py ...` (date, N cores, load a -> b, BUSY|quiet)``."""
    m = report["machine"]
    load = f"load average {m['load_avg_1min_start']} -> {m['load_avg_1min_end']}"
    state = "BUSY: other processes shared the cores" if is_busy(m) else "quiet"
    return (f"`{m['command']}` ({m['started']}, {m['cpu_count']} cores, {m['device']}, {load}, "
            f"{state}), from `benchmarks/results/{BLOCKS[name][0]}`:")


def render(name: str, results: Path = RESULTS) -> str:
    """The body of block ``name`` (ending in a newline), from the JSON files alone."""
    if name == "goals":
        lines = [f"- {n}: {_load(n, results)['verdict']}" for n in GOALS]
        return "\n".join(lines) + "\n"
    if name not in BLOCKS:
        raise SystemExit(f"unknown block bench:{name}; known: {', '.join([*BLOCKS, 'goals'])}")
    report = _load(name, results)
    if name == "reproduction":
        m = report["machine"]
        first, last = (report[k][:16].replace("T", " ") if report[k] else "-"
                       for k in ("first_started", "last_ended"))
        notes = "".join(f"- {line}\n" for line in report["notes"])
        return (f"`{m['command']}`, from "
                f"`benchmarks/results/{BLOCKS[name][0]}`: {report['runs_done']}/"
                f"{report['runs_planned']} runs on {m['cpu_count']} cores ({m['device']}), jobs "
                f"from {first} to {last} UTC, {report['job_hours']:.2f} h of job time "
                f"({report['parallel']} jobs at a time).\n\n{report['markdown']}\n\n{notes}")
    return f"{_provenance(name, report)}\n\n```\n{report['table']}\n{report['verdict']}\n```\n"


def sync(doc: Path, results: Path = RESULTS, check: bool = False) -> list[str]:
    """Rewrite (or with ``check`` only compare) the blocks of ``doc``; the names that differed."""
    text = doc.read_text()
    stale: list[str] = []

    def fill(match: re.Match) -> str:
        body = render(match["name"], results)
        if body != match["body"]:
            stale.append(match["name"])
        return match.group(1) + body + match.group(4)

    new = _BLOCK.sub(fill, text)
    if stale and not check:
        doc.write_text(new)
    return stale


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("docs", type=Path, nargs="*", default=list(DOCS))
    args = p.parse_args(argv)
    failed = False
    for doc in args.docs:
        stale = sync(doc, args.results, check=args.check)
        rel = doc.resolve().relative_to(ROOT) if doc.resolve().is_relative_to(ROOT) else doc
        if stale and args.check:
            failed = True
            print(f"{rel}: blocks differ from their JSON: {', '.join(stale)} "
                  "(run `python benchmarks/tables.py`)", file=sys.stderr)
        else:
            print(f"{rel}: " + (f"rewrote {', '.join(stale)}" if stale else "up to date"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
