"""mmengine hooks that connect a Runner inside a Ray Train worker to MLflow, Ray and the console.

One module per concept (the hooks are instances registered by :mod:`bckd.runtime.worker`, not
names in mmengine's ``HOOKS`` registry):

* :mod:`~bckd.runtime.hooks.mlflow_logger`: ``MLflowLoggerHook``, metrics and artifacts to MLflow;
* :mod:`~bckd.runtime.hooks.teacher`: the teacher's COCO metrics before the first epoch;
* :mod:`~bckd.runtime.hooks.figure3`: the Figure 3 disagreement maps after each evaluation;
* :mod:`~bckd.runtime.hooks.ray_checkpoint`: ``RayCheckpointHook``, Ray Train's checkpoint protocol;
* :mod:`~bckd.runtime.hooks.progress`: ``ProgressHook``, the console's progress lines;
* :mod:`~bckd.runtime.hooks.shard_audit`: ``ShardAuditHook``, which images each rank trained on;
* :mod:`~bckd.runtime.hooks.stop`: ``StopHook``, a graceful stop at the same iteration on
  every rank;
* :mod:`~bckd.runtime.hooks.runner_state`: what they all read from the Runner.
"""

from bckd.runtime.hooks.mlflow_logger import MLflowLoggerHook
from bckd.runtime.hooks.progress import ProgressHook
from bckd.runtime.hooks.ray_checkpoint import CHECKPOINT_FILE, RayCheckpointHook
from bckd.runtime.hooks.runner_state import images_per_second, will_validate
from bckd.runtime.hooks.shard_audit import ShardAuditHook, node_identity, params_sha256
from bckd.runtime.hooks.stop import StopHook
from bckd.runtime.hooks.teacher import evaluate_teacher

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
