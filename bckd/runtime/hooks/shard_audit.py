"""What each rank did, for the data-parallel checks and tests: ``ShardAuditHook`` (all ranks)
records which images a rank trained on; :func:`params_sha256` and :func:`node_identity`
describe its weights and where it ran."""

from __future__ import annotations

import hashlib
import os

import torch
from mmengine.hooks import Hook

from bckd.runtime.hooks.runner_state import unwrap

__all__ = ["ShardAuditHook", "node_identity", "params_sha256"]


class ShardAuditHook(Hook):
    """Record the image ids this rank trained on, per epoch (for the data-parallel checks)."""

    priority = "LOW"

    def __init__(self) -> None:
        self.seen: dict[int, list[int]] = {}

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        samples = data_batch.get("data_samples", []) if isinstance(data_batch, dict) else []
        ids = self.seen.setdefault(runner.epoch + 1, [])
        ids.extend(int(s.metainfo.get("img_id", -1)) for s in samples)


def params_sha256(model: torch.nn.Module) -> str:
    """Hash of the trainable parameters (BatchNorm running stats are per rank under DDP)."""
    digest = hashlib.sha256()
    for name, param in sorted(unwrap(model).named_parameters()):
        digest.update(name.encode())
        digest.update(param.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def node_identity() -> dict[str, str]:
    """Where this worker runs: Ray node id, host name and pid."""
    import ray

    return {"node_id": ray.get_runtime_context().get_node_id(), "host": os.uname().nodename,
            "pid": str(os.getpid())}
