"""The parent run's picture: each swept value against the trial's best metric, one panel per key.

Filled markers are trials that ran every epoch, hollow ones trials the scheduler stopped early
(their metric is from fewer epochs); the best trial is ringed.
"""

from __future__ import annotations

import math
from pathlib import Path

__all__ = ["plot_weights"]


def plot_weights(trials: list[dict], params: tuple, metric: str, path: str | Path,
                 best_trial_id: str | None = None) -> Path:
    """``trials``: dicts with ``trial_id``, ``config`` ({key: value}), ``best`` (the metric, or
    None) and ``outcome``. Writes a PNG to ``path``."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(params), figsize=(4 * len(params), 3.4), squeeze=False)
    scored = [t for t in trials if t.get("best") is not None and math.isfinite(t["best"])]
    for ax, param in zip(axes[0], params, strict=True):
        # choice/grid values on a categorical axis (in the order the space lists them)
        ranged = param.kind in ("uniform", "loguniform", "randint")
        categories = None if ranged else [str(v) for v in dict.fromkeys(param.args)]
        for trial in scored:
            value = trial["config"].get(param.key)
            x = value if categories is None else categories.index(str(value))
            full = trial["outcome"] == "COMPLETED"
            ax.scatter([x], [trial["best"]], s=40, color="C0",
                       facecolors="C0" if full else "none")
            if trial["trial_id"] == best_trial_id:
                ax.scatter([x], [trial["best"]], s=160, facecolors="none", edgecolors="C3")
        if ranged:  # the whole range, so a reader sees what the sweep covered
            low, high = param.args
            pad = (high / low) ** 0.05 if param.kind == "loguniform" else None
            ax.set_xlim(*((low / pad, high * pad) if pad else
                          (low - 0.05 * (high - low), high + 0.05 * (high - low))))
        if param.kind == "loguniform":
            ax.set_xscale("log")
            # ticks at powers of 2 (0.25 ... 8: the paper's weight ranges), plain numbers
            ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=2))
            ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        if categories is not None:
            ax.set_xticks(range(len(categories)), categories)
            ax.set_xlim(-0.5, len(categories) - 0.5)
        ax.set_xlabel(param.key, fontsize=8)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{metric} per trial (hollow: stopped early; ringed: best)", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
