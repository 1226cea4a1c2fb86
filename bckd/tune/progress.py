"""The sweep's progress on the driver's console: a table of trials, reprinted as they change.

    bckd: sweep sweep_bckd_gfl: 1 RUNNING, 1 COMPLETED, 1 STOPPED
    trial        state      model.loss_distill_cls.loss_weight  epoch  coco/bbox_mAP  best
    4c1f0_00000  COMPLETED  0.6203                              3/3    0.0412         0.0412
    4c1f0_00001  STOPPED    2.951                               1/3    0.0107         0.0107
    4c1f0_00002  RUNNING    0.3011                              2/3    0.0390         0.0390

One column per swept config key, headed by the key (a space of one key above).
"""

from __future__ import annotations

import math
from collections import Counter

from ray.tune import Callback

from bckd.tune.trial import outcome

__all__ = ["TrialTable", "format_table"]


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return "-" if value is None else str(value)


def format_table(rows: list[dict], columns: list[str]) -> str:
    """Left-aligned text columns; ``rows`` are dicts keyed by ``columns``."""
    cells = [columns] + [[_fmt(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip()
                     for line in cells)


class TrialTable(Callback):
    """Prints the table when a trial starts, reports an epoch, or ends."""

    def __init__(self, sweep_name: str, params: tuple, metric: str, mode: str,
                 max_epochs: int) -> None:
        self.sweep_name = sweep_name
        self.params = params  # bckd.tune.space.Param
        self.metric = metric
        self.mode = mode
        self.max_epochs = max_epochs
        self._ended: dict[str, str] = {}
        self._best: dict[str, float] = {}
        self._latest: dict[str, dict] = {}  # Tune updates trial.last_result after the callbacks

    def _state(self, trial) -> str:
        if trial.trial_id in self._ended:
            return self._ended[trial.trial_id]
        if trial.status == "TERMINATED":
            return outcome(trial.last_result, self.max_epochs)
        return str(trial.status)

    def rows(self, trials: list) -> list[dict]:
        rows = []
        for trial in trials:
            last = self._latest.get(trial.trial_id) or trial.last_result or {}
            row = {"trial": trial.trial_id, "state": self._state(trial),
                   "epoch": f"{last.get('epoch', 0)}/{self.max_epochs}",
                   self.metric: last.get(self.metric), "best": self._best.get(trial.trial_id)}
            row.update({p.key: trial.config.get(p.key) for p in self.params})
            rows.append(row)
        return rows

    def render(self, trials: list) -> str:
        rows = self.rows(trials)
        counts = Counter(row["state"] for row in rows)
        head = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        columns = ["trial", "state", *(p.key for p in self.params), "epoch", self.metric, "best"]
        return f"bckd: sweep {self.sweep_name}: {head}\n{format_table(rows, columns)}"

    def _print(self, trials: list) -> None:
        print(self.render(trials), flush=True)

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        self._print(trials)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        self._latest[trial.trial_id] = result
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            best = self._best.get(trial.trial_id)
            better = max if self.mode == "max" else min
            self._best[trial.trial_id] = value if best is None else better(best, value)
        self._print(trials)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        last = self._latest.get(trial.trial_id) or trial.last_result or {}
        self._ended[trial.trial_id] = outcome({**last, "done": True}, self.max_epochs)
        self._print(trials)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._ended[trial.trial_id] = "ERROR"
        self._print(trials)
