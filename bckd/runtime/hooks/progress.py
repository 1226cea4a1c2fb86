"""``ProgressHook`` (rank 0): the console's progress lines, forwarded by Ray to the driver's
console, and the job's sign of life to the service (``service.core.stalls`` counts them).

Training: every N iterations and at each epoch's end, ``bckd: progress epoch=E/EE iter=I/II
eta=H:MM:SS images_per_s=X step_s=S loss...=...``, ``step_s`` the mean iteration time over
the last N (the service's stall timeout grows with it). Validation: every N iterations and at
the last, ``bckd: progress val epoch=E batch=I/II``, so that a long evaluation is not silence
(``batch``, not ``iter``: readers of the training lines look for ``iter=``).
"""

from __future__ import annotations

import datetime

from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.logging import print_log

from bckd.runtime.hooks.runner_state import images_per_second, scalars

__all__ = ["ProgressHook"]


class ProgressHook(Hook):
    """A console line every ``interval`` iterations on rank 0 (Ray shows it on the driver)."""

    priority = "LOW"

    def __init__(self, interval: int = 10) -> None:
        self.interval = max(1, interval)
        self._printed = -1  # the last training iteration a line was printed for

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        step = runner.iter + 1
        if get_rank() != 0 or (step % self.interval and step != runner.max_iters):
            return
        speed = images_per_second(runner, data_batch)
        losses = " ".join(f"{k}={v:.4f}" for k, v in scalars(outputs).items() if "loss" in k)
        self._train_line(runner, step, f"images_per_s={speed or 0.0:.1f} ", losses)

    def after_train_epoch(self, runner) -> None:
        # runner.iter counts the epoch's last iteration already
        if get_rank() == 0 and self._printed != runner.iter:
            self._train_line(runner, runner.iter, "", "")

    def after_val_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        total = len(runner.val_dataloader)
        if get_rank() != 0 or ((batch_idx + 1) % self.interval and batch_idx + 1 != total):
            return
        print_log(f"bckd: progress val epoch={runner.epoch} batch={batch_idx + 1}/{total}",
                  logger="current")

    def _train_line(self, runner, step: int, speed: str, losses: str) -> None:
        self._printed = step
        eta = runner.message_hub.get_info("eta")
        eta_text = str(datetime.timedelta(seconds=int(eta))) if eta is not None else "?"
        try:
            step_s = runner.message_hub.get_scalar("train/time").mean(self.interval)
        except KeyError:  # no iteration timed yet
            step_s = 0.0
        # mmengine's logger, not print: Ray Train's patched print would show the line twice.
        print_log(f"bckd: progress epoch={runner.epoch + 1}/{runner.max_epochs} "
                  f"iter={step}/{runner.max_iters} eta={eta_text} {speed}"
                  f"step_s={step_s:.3f} {losses}".rstrip(), logger="current")
