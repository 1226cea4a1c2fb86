"""The steps an attempt trains again, said on the run: ``bckd.replayed_steps``.

A resumed attempt (a restarted worker, a restarted job) trains again the iterations after its
checkpoint, and the attempt before it may have logged some of them before it died.
:class:`~bckd.tracking.runs.RunWriter` keeps the first value of each step, so the run holds
each step once; for those steps, the values are the killed attempt's, which the model no longer
follows from there. MLflow can add a point to a metric's history but not delete or overwrite
one, so the new attempt's values could only be added beside the old ones (each replayed step
twice, and every reader of the history left to pick the later point). The run says instead, in
the tag ``bckd.replayed_steps``, which steps were trained again: ``<first>-<last>`` per resume,
comma-separated (``145-156`` or ``145-156,301-310``). Its losses there are the killed
attempt's; the curve after ``<last>`` is the new attempt's alone.
"""

from __future__ import annotations

from bckd.tracking.runs import RunWriter

__all__ = ["REPLAY_TAG", "STEP_KEY", "record_replay"]

REPLAY_TAG = "bckd.replayed_steps"
STEP_KEY = "epoch"  # logged at every training step by MLflowLoggerHook


def record_replay(writer: RunWriter, resumed_at: int) -> str | None:
    """Add the window ``resumed_at + 1 .. <last step logged>`` to the run's tag when the run
    already holds steps after ``resumed_at`` (the iteration training starts after); the window
    added, or None."""
    history = writer.client.get_metric_history(writer.run_id, STEP_KEY)
    last = max((m.step for m in history), default=0)
    if last <= resumed_at:
        return None
    window = f"{resumed_at + 1}-{last}"
    before = writer.client.get_run(writer.run_id).data.tags.get(REPLAY_TAG)
    writer.set_tags({REPLAY_TAG: f"{before},{window}" if before else window})
    return window
