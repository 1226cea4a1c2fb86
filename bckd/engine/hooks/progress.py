"""``ProgressHook`` (rank 0): one console line every N iterations, forwarded by Ray to the
driver's console: epoch, iteration, ETA, images/s, latest losses."""

from __future__ import annotations

import datetime

from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.logging import print_log

from bckd.engine.hooks.runner_state import images_per_second, scalars

__all__ = ["ProgressHook"]


class ProgressHook(Hook):
    """A console line every ``interval`` iterations on rank 0 (Ray shows it on the driver)."""

    priority = "LOW"

    def __init__(self, interval: int = 10) -> None:
        self.interval = max(1, interval)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        step = runner.iter + 1
        if get_rank() != 0 or (step % self.interval and step != runner.max_iters):
            return
        eta = runner.message_hub.get_info("eta")
        eta_text = str(datetime.timedelta(seconds=int(eta))) if eta is not None else "?"
        speed = images_per_second(runner, data_batch)
        losses = " ".join(f"{k}={v:.4f}" for k, v in scalars(outputs).items() if "loss" in k)
        # mmengine's logger, not print: Ray Train's patched print would show the line twice.
        print_log(f"bckd: progress epoch={runner.epoch + 1}/{runner.max_epochs} "
                  f"iter={step}/{runner.max_iters} eta={eta_text} "
                  f"images_per_s={speed or 0.0:.1f} {losses}", logger="current")
