"""Shared helpers of the job tests (not named conftest.py: tests/distill imports
its own conftest by name): a tiny synthetic data set and TINY config overrides.

Real Ray (local clusters), real MLflow (SQLite), real mmdet, with settings small enough that a
distillation epoch takes seconds on 2 cores: 16 train / 8 val images of 128 px, batch 4.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bckd.data.synth import SynthConfig, generate


@contextmanager
def head_of_one_cpu() -> Iterator:
    """A ``ray.cluster_utils.Cluster`` whose head has 1 CPU, this process attached to it; the
    test adds nodes with ``add_node``."""
    import ray
    from ray.cluster_utils import Cluster

    from service.stack.embedded import free_port

    if ray.is_initialized():
        ray.shutdown()
    # A free dashboard port: 8265 may belong to another cluster on this machine (`bckd serve`).
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": True, "dashboard_port": free_port()})
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def make_synth(out: Path) -> Path:
    """16 train / 8 val images of 128 px in ``out``."""
    generate(SynthConfig(out=out, num_train=16, num_val=8, image_size=128, workers=1),
             progress=False)
    return out


ROOT = Path(__file__).resolve().parents[2]
TEACHER_CONFIG = str(ROOT / "configs/synth/gfl_teacher.py")
BCKD_CONFIG = str(ROOT / "configs/synth/bckd_gfl.py")


def tiny(data: Path, max_epochs: int = 2, **extra) -> dict:
    """--cfg-options for a run of a few seconds per epoch on the tiny data."""
    root = f"{data}/"
    return {
        "train_dataloader.dataset.data_root": root,
        "val_dataloader.dataset.data_root": root,
        "val_evaluator.ann_file": f"{root}annotations/instances_val.json",
        "train_dataloader.batch_size": 4,
        "val_dataloader.batch_size": 4,
        "train_dataloader.num_workers": 0,
        "val_dataloader.num_workers": 0,
        "train_dataloader.persistent_workers": False,
        "val_dataloader.persistent_workers": False,
        "train_cfg.max_epochs": max_epochs,
        "param_scheduler": [dict(type="LinearLR", start_factor=0.1, by_epoch=False, begin=0,
                                 end=4)],
        "default_hooks.logger.interval": 1,
        **extra,
    }
