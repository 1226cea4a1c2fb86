"""The reproduction's state that outlives a session: one JSON record per finished run, and the
teachers' weights, both committed to the repository as they are produced.

A working session here is 3 hours on a machine that is not kept, and the table needs more, so
``reproduce.py`` reads what earlier sessions committed and runs only what is missing:

* ``records/<run name>@<machine>.json``: what a finished run measured (every COCO metric), what
  it was (family, method, seed, the service's config hash, the protocol's hash), where it ran
  (CPU model, cores, torch, git commit) and its MLflow run id in that session's store.
* ``teachers/<family>_teacher.pth``: a teacher's final weights as an fp16 state dict, weights
  only; its record holds the file's sha256, checked before any student reads it.

Exact pairs need one machine: the same seed gives the same run only where the floating-point
sums run in the same order (docs/REPRODUCTION.md, "Run to run"). So the records of a seed's
block (one family, one seed, every method) are only compared with records of the same machine
(:func:`machine_key`), and a block is finished once one machine holds all of it.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from common import RESULTS

__all__ = ["REPRO", "Records", "commit", "git_commit", "machine_key", "sha256",
           "teacher_to_fp16"]

REPRO = RESULTS / "repro"
ROOT = Path(__file__).resolve().parents[1]


def machine_key(machine: dict[str, Any]) -> str:
    """What makes two runs of one config give the same numbers: CPU model, cores, torch.
    Short and file-name safe; the record keeps the full values beside it."""
    text = f"{machine['cpu_model']}|{machine['cpu_count']}|{machine.get('torch', '')}"
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def git_commit() -> str:
    out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                         text=True, check=False)
    return out.stdout.strip() or "unknown"


def teacher_to_fp16(checkpoint: Path, out: Path) -> str:
    """Write the weights of an mmengine checkpoint as an fp16 state dict (no optimizer, no
    meta) to ``out``; return its sha256. Integer buffers (BatchNorm's counters) stay as they
    are. fp16 halves the file against fp32: the table's teachers must fit the repository."""
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(half, out)
    return sha256(out)


def commit(paths: list[Path], message: str) -> bool:
    """``git add`` and commit exactly ``paths`` in the repository that holds them (other work
    in its tree is left alone); say so and go on when git refuses (the files stay on disk and
    the next record's commit, or a person, takes them)."""
    files = [str(p.resolve()) for p in paths]
    git = ["git", "-C", str(paths[0].resolve().parent)]
    for _ in range(5):  # another process may hold the index for a moment
        add = subprocess.run([*git, "add", "--", *files], capture_output=True, check=False)
        if add.returncode == 0 and subprocess.run(
                [*git, "commit", "-q", "-m", message, "--", *files], capture_output=True,
                check=False).returncode == 0:
            return True
        time.sleep(2)
    print(f"  could not commit {', '.join(files)}; it stays on disk", flush=True)
    return False


class Records:
    """The committed records of one protocol (``protocol``: the hash of its ``Schedule``)."""

    def __init__(self, directory: Path, protocol: str) -> None:
        self.dir = directory
        self.protocol = protocol
        self.all: list[dict] = []
        self.reload()

    def reload(self) -> None:
        files = sorted(self.dir.glob("*.json")) if self.dir.is_dir() else []
        self.all = [r for r in (json.loads(f.read_text()) for f in files)
                    if r.get("protocol") == self.protocol]

    def of(self, name: str, machine: str | None = None) -> list[dict]:
        return [r for r in self.all if r["name"] == name
                and (machine is None or r["machine_key"] == machine)]

    def teacher(self, family: str) -> dict | None:
        found = [r for r in self.all if r["family"] == family and r["method"] == "teacher"]
        return found[0] if found else None

    def write(self, record: dict) -> Path:
        path = self.dir / f"{record['name']}@{record['machine_key']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        self.all.append(record)
        return path

    def block_machine(self, family: str, seed: int, names: list[str]) -> str | None:
        """The machine whose records cover most of a block's ``names`` (earliest on a tie), or
        None when no machine holds any: the one machine the block's statistics read."""
        counts: dict[str, int] = {}
        for r in self.all:
            if r["family"] == family and r["seed"] == seed and r["name"] in names:
                counts[r["machine_key"]] = counts.get(r["machine_key"], 0) + 1
        return max(counts, key=lambda m: counts[m]) if counts else None
