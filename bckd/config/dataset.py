"""Point a config at a COCO data set: its paths, its class names, its heads' class count.

A job on a data set (the REST API's ``dataset`` or ``data_root``) trains on that set's
categories, so :func:`dataset_options` turns the set into config overrides: the loaders'
``data_root``, the evaluators' ``ann_file``, each loader dataset's ``metainfo.classes`` and the
``num_classes`` of the student's and the teacher's heads. They are ordinary overrides, so they
go through :func:`bckd.config.overrides.apply_overrides` and the config policy like any other, in
the API and again in the job. :func:`check_teacher_classes` refuses a teacher checkpoint
trained on other classes, naming both lists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bckd.config.kinds import is_distillation
from bckd.config.overrides import MISSING, lookup

__all__ = ["LOADERS", "dataset_options", "check_teacher_classes", "checkpoint_classes",
           "head_num_classes", "inner_dataset"]

LOADERS = ("train_dataloader", "val_dataloader", "test_dataloader")
EVALUATORS = ("val_evaluator", "test_evaluator")
# The heads whose class count follows the set: a plain detector's, the distiller's student's
# and an inline teacher's (a teacher config file is made inline only when its count differs).
HEADS = ("model.bbox_head", "model.student.bbox_head", "model.teacher.bbox_head")


def inner_dataset(loader: Any) -> Any:
    """The dataset config of a dataloader, looking through wrappers (RepeatDataset...)."""
    if not isinstance(loader, Mapping):
        return None
    dataset = loader.get("dataset")
    while isinstance(dataset, Mapping) and "dataset" in dataset and "ann_file" not in dataset:
        dataset = dataset["dataset"]
    return dataset


def _classes_option(cfg: Any, split: str, classes: list[str]) -> dict[str, Any]:
    metainfo = lookup(cfg, f"{split}.dataset.metainfo")
    if isinstance(metainfo, Mapping):
        if list(metainfo.get("classes") or []) == classes:
            return {}
        key = f"{split}.dataset.metainfo.classes"
        return {key if "classes" in metainfo else f"+{key}": classes}
    return {f"+{split}.dataset.metainfo": {"classes": classes}}


def head_num_classes(model: Any) -> Any:
    """``model.bbox_head.num_classes`` of a model config, or None."""
    head = model.get("bbox_head") if isinstance(model, Mapping) else None
    return head.get("num_classes") if isinstance(head, Mapping) else None


def _heads_options(cfg: Any, count: int, configs_dir: Path | None, base: Path | None
                   ) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for head in HEADS:
        found = lookup(cfg, f"{head}.num_classes")
        if found is not MISSING and found != count:
            options[f"{head}.num_classes"] = count
    teacher = lookup(cfg, "model.teacher")
    if isinstance(teacher, str) and is_distillation(lookup(cfg, "model")):
        from bckd.distill import teacher_model_config

        inline = teacher_model_config(teacher, configs_dir, base)
        if head_num_classes(inline) not in (None, count):
            inline["bbox_head"]["num_classes"] = count
            # _delete_: mmengine's merge replaces the file name by the model, not into it
            options["model.teacher"] = {"_delete_": True, **inline.to_dict()}
    return options


def dataset_options(cfg: Any, data_root: str, classes: Sequence[str] | None,
                    configs_dir: Path | None = None, base: Path | None = None
                    ) -> dict[str, Any]:
    """Overrides (dotted key -> value; ``+key`` adds one) that point ``cfg`` at the set in
    ``data_root`` (the ``bckd data synth`` layout) with the category names ``classes`` (None:
    paths only). Settings the config already has are left out, so the shipped configs on the
    synthetic set get paths only. A teacher config file is read as
    :func:`bckd.distill.teacher_model_config` reads it with ``configs_dir`` and ``base``
    (raising ``ValueError`` for a file the config policy would refuse)."""
    root = data_root.rstrip("/") + "/"
    options: dict[str, Any] = {}
    if isinstance(cfg.get("data_root"), str):  # the configs' own variable, as mmdet's have
        options["data_root"] = root
    for split in LOADERS:
        if lookup(cfg, f"{split}.dataset.data_root") is not MISSING:
            options[f"{split}.dataset.data_root"] = root
        if classes is not None and isinstance(lookup(cfg, f"{split}.dataset"), Mapping):
            options.update(_classes_option(cfg, split, list(classes)))
    for ev in EVALUATORS:
        ann = lookup(cfg, f"{ev}.ann_file")
        if isinstance(ann, str):
            options[f"{ev}.ann_file"] = str(Path(root) / "annotations" / Path(ann).name)
    if classes is not None:
        options.update(_heads_options(cfg, len(classes), configs_dir, base))
    return options


def checkpoint_classes(path: str) -> list[str] | None:
    """The class names a checkpoint was trained on (``meta['dataset_meta']['classes']``, as
    mmengine's Runner saves them), or None when it does not say."""
    from bckd.checkpoint import load_checkpoint

    meta = load_checkpoint(path).get("meta")
    dataset_meta = meta.get("dataset_meta") if isinstance(meta, Mapping) else None
    classes = dataset_meta.get("classes") if isinstance(dataset_meta, Mapping) else None
    return [str(c) for c in classes] if classes is not None else None


def check_teacher_classes(ckpt: str, teacher_model: Any, classes: Sequence[str]) -> None:
    """Raise ``ValueError`` when the teacher checkpoint ``ckpt`` was trained on other classes
    than the set's: by its saved class names, or when it saves none, by the class count of
    the teacher config's head (``teacher_model``, before the set's options) it belongs to."""
    classes = list(classes)
    saved = checkpoint_classes(ckpt)
    if saved is not None and saved != classes:
        raise ValueError(f"teacher checkpoint {ckpt} was trained on the classes {saved}, the "
                         f"data set has {classes}")
    count = head_num_classes(teacher_model)
    if saved is None and count is not None and count != len(classes):
        raise ValueError(f"teacher checkpoint {ckpt} saves no class names and its head has "
                         f"{count} classes; the data set has {len(classes)}: {classes}")
