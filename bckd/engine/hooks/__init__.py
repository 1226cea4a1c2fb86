"""mmengine hooks that connect a Runner inside a Ray Train worker to MLflow, Ray and the console.

One module per concept (the hooks are instances registered by :mod:`bckd.engine.worker`, not
names in mmengine's ``HOOKS`` registry):

* :mod:`~bckd.engine.hooks.mlflow_logger`: ``MLflowLoggerHook``, metrics and artifacts to MLflow;
* :mod:`~bckd.engine.hooks.teacher`: the teacher's COCO metrics before the first epoch;
* :mod:`~bckd.engine.hooks.figure3`: the Figure 3 disagreement maps after each evaluation;
* :mod:`~bckd.engine.hooks.ray_checkpoint`: ``RayCheckpointHook``, Ray Train's checkpoint protocol;
* :mod:`~bckd.engine.hooks.progress`: ``ProgressHook``, the console's progress lines;
* :mod:`~bckd.engine.hooks.shard_audit`: ``ShardAuditHook``, which images each rank trained on;
* :mod:`~bckd.engine.hooks.stop`: ``StopHook``, a graceful stop at the same iteration on every rank;
* :mod:`~bckd.engine.hooks.runner_state`: what they all read from the Runner.
"""

from bckd.engine.hooks.mlflow_logger import MLflowLoggerHook
from bckd.engine.hooks.progress import ProgressHook
from bckd.engine.hooks.ray_checkpoint import CHECKPOINT_FILE, RayCheckpointHook
from bckd.engine.hooks.runner_state import images_per_second, will_validate
from bckd.engine.hooks.shard_audit import ShardAuditHook, node_identity, params_sha256
from bckd.engine.hooks.stop import StopHook
from bckd.engine.hooks.teacher import evaluate_teacher

__all__ = [
    "CHECKPOINT_FILE",
    "MLflowLoggerHook",
    "ProgressHook",
    "RayCheckpointHook",
    "ShardAuditHook",
    "StopHook",
    "evaluate_teacher",
    "images_per_second",
    "node_identity",
    "params_sha256",
    "will_validate",
]
