"""A job's checkpoints between mmengine and Ray Train: the config's ``CheckpointHook`` settings
as Ray's keep-N and best metric, whether Ray holds a run to resume, and the export of a Ray
checkpoint's student weights to ``final.pth`` / ``best.pth``."""

from __future__ import annotations

from pathlib import Path

from bckd.config.spec import JobResult

__all__ = ["best_checkpoint", "checkpoint_policy", "export_student", "export_results",
           "snapshot_exists"]


def checkpoint_policy(cfg) -> dict:
    """Keep-N and best metric from the config's mmengine CheckpointHook settings."""
    hook = (cfg.get("default_hooks") or {}).get("checkpoint") or {}
    save_best = hook.get("save_best")
    if isinstance(save_best, (list, tuple)):
        save_best = save_best[0] if save_best else None
    if save_best == "auto":
        save_best = "coco/bbox_mAP"
    rule = hook.get("rule") or "greater"
    rule = rule[0] if isinstance(rule, (list, tuple)) else rule
    keep = hook.get("max_keep_ckpts", -1)
    return {
        "score_key": save_best,
        "score_rule": rule,
        "interval": int(hook.get("interval", 1)),
        "num_to_keep": keep if keep and keep > 0 else None,
    }


def snapshot_exists(storage: str, ray_name: str) -> bool:
    """Whether Ray Train's checkpoint manager left a snapshot of run ``ray_name`` (a resume)."""
    if "://" in storage:
        import pyarrow.fs

        fs, path = pyarrow.fs.FileSystem.from_uri(storage.rstrip("/") + f"/{ray_name}")
        info = fs.get_file_info(f"{path}/checkpoint_manager_snapshot.json")
        return info.type != pyarrow.fs.FileType.NotFound
    return (Path(storage) / ray_name / "checkpoint_manager_snapshot.json").is_file()


def export_student(checkpoint, path: Path) -> str:
    """Write the student weights (and epoch/iter meta) of a Ray checkpoint to ``path``."""
    import torch

    from bckd.checkpoint import mmengine_safe_globals
    from bckd.runtime.hooks.ray_checkpoint import CHECKPOINT_FILE

    with checkpoint.as_directory() as directory, mmengine_safe_globals():
        full = torch.load(Path(directory) / CHECKPOINT_FILE, map_location="cpu",
                          weights_only=True)
    meta = {k: full["meta"][k] for k in ("epoch", "iter", "dataset_meta") if k in full["meta"]}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"meta": meta, "state_dict": full["state_dict"]}, path)
    return str(path)


def export_results(result: JobResult, ray_result, policy: dict, writer, work_dir: Path) -> None:
    """Fill ``result`` from Ray's: metrics, ranks, and (unless stopped) the final and best
    student weights, written to the work dir and logged to MLflow."""
    result.metrics = dict(ray_result.metrics or {})
    result.ranks = (ray_result.return_value or {}).get("ranks", [])
    if (ray_result.return_value or {}).get("stopped") or ray_result.checkpoint is None:
        return
    result.final_checkpoint = export_student(ray_result.checkpoint, work_dir / "final.pth")
    best = None
    if policy["score_key"]:
        best = best_checkpoint(ray_result, policy["score_key"], policy["score_rule"])
    result.best_checkpoint = export_student(best or ray_result.checkpoint,
                                            work_dir / "best.pth")
    writer.log_artifact(result.final_checkpoint, "checkpoints")
    writer.log_artifact(result.best_checkpoint, "checkpoints")


def best_checkpoint(ray_result, key: str, rule: str):
    """The kept checkpoint with the best ``key``, or None.

    Not ``Result.get_best_checkpoint``: it reads ``coco/bbox_mAP`` as a nested key (``coco`` ->
    ``bbox_mAP``), which the flat metrics of a restored checkpoint manager (a rerun of a
    finished run) do not have, and then raises.
    """
    scored = [(ckpt, metrics[key]) for ckpt, metrics in ray_result.best_checkpoints or []
              if isinstance(metrics.get(key), int | float)]
    if not scored:
        return None
    pick = max if rule == "greater" else min
    return pick(scored, key=lambda pair: pair[1])[0]
