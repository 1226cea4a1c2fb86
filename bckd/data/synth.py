"""Write the synthetic COCO-format detection set: check the arguments, draw the images in
worker processes, and write ``instances_{split}.json`` and ``dataset.json``.

What the images hold (classes, scales, occlusion, clutter) and how the annotations are measured
is :mod:`bckd.data.scene`. Each image has its own random generator seeded by
``(seed, split, index)``, so the output is byte-identical whatever the number of workers.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from multiprocessing import Pool
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from bckd.data.scene import (
    MAX_OBJECTS,
    MIN_VISIBLE,
    NUM_CATEGORIES,
    SHAPES,
    TEXTURES,
    category_names,
    class_probabilities,
    draw_scene,
)

__all__ = ["SynthConfig", "ensure", "generate", "validate"]

SPLITS = ("train", "val")
JPEG_QUALITY = 95


@dataclass(frozen=True)
class SynthConfig:
    """Parameters of a dataset written to ``out/{train,val,annotations}``."""

    out: Path
    num_train: int = 2000
    num_val: int = 500
    image_size: int = 256  # square images, pixels
    num_classes: int = 8  # first categories of the fixed shape x texture order
    seed: int = 0
    workers: int | None = None  # processes; None: os.cpu_count()
    min_object_size: int = 8  # pixels; the largest objects are image_size / 2


def validate(cfg: SynthConfig) -> None:
    """Raise ``ValueError`` naming the CLI argument of the first invalid field of ``cfg``.

    Creates ``cfg.out`` (and removes a probe file) to check that it is writable.
    """
    for flag, value in (("--num-train", cfg.num_train), ("--num-val", cfg.num_val)):
        if value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    if cfg.min_object_size < 4:
        raise ValueError(f"--min-object-size must be >= 4, got {cfg.min_object_size}")
    if cfg.image_size < 4 * cfg.min_object_size:
        raise ValueError(
            f"--image-size must be at least 4 x --min-object-size ({4 * cfg.min_object_size}), "
            f"got {cfg.image_size}"
        )
    if not 1 <= cfg.num_classes <= NUM_CATEGORIES:
        raise ValueError(
            f"--num-classes must be between 1 and {NUM_CATEGORIES} (the number of shape x "
            f"texture combinations), got {cfg.num_classes}"
        )
    if cfg.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {cfg.seed}")
    if cfg.workers is not None and cfg.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {cfg.workers}")
    out = Path(cfg.out)
    probe = out / ".write_probe"
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"--out: cannot write to {out}: {err.strerror or err}") from err


def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Independent generator per image, so parallel generation is deterministic."""
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), index]))


def _render(task: tuple[SynthConfig, str, int]) -> list[dict]:
    """Draw and save one image; return its annotations (no ids) in drawing order."""
    cfg, split, index = task
    rng = _image_rng(cfg.seed, split, index)
    out, annotations = draw_scene(rng, cfg.image_size, cfg.num_classes, cfg.min_object_size)
    path = Path(cfg.out) / split / _file_name(index)
    cv2.imwrite(str(path), out, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    return annotations


def _file_name(index: int) -> str:
    return f"{index + 1:012d}.jpg"


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already; avoid oversubscription


def _render_split(cfg: SynthConfig, split: str, count: int, progress: bool) -> list[list[dict]]:
    """Render ``count`` images of ``split``; per-image annotation lists in index order."""
    (Path(cfg.out) / split).mkdir(parents=True, exist_ok=True)
    tasks = [(cfg, split, index) for index in range(count)]
    workers = min(cfg.workers or os.cpu_count() or 1, count)
    bar = dict(total=count, desc=f"synth {split}", unit="img", disable=not progress)
    if workers == 1:
        return [_render(task) for task in tqdm(tasks, **bar)]
    chunk = max(1, min(16, count // (4 * workers)))
    with Pool(workers, initializer=_init_worker) as pool:
        return list(tqdm(pool.imap(_render, tasks, chunksize=chunk), **bar))


def _coco(cfg: SynthConfig, split: str, per_image: list[list[dict]]) -> dict:
    """COCO instances dict; image ids are 1-based indices, annotation ids run over the file."""
    images, annotations = [], []
    for index, anns in enumerate(per_image):
        image_id = index + 1
        images.append(
            {"id": image_id, "file_name": _file_name(index),
             "width": cfg.image_size, "height": cfg.image_size}
        )  # fmt: skip
        for ann in anns:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, **ann})
    categories = [
        {"id": k + 1, "name": name, "supercategory": name.split("_")[0]}
        for k, name in enumerate(category_names(cfg.num_classes))
    ]
    info = {"description": f"bckd synthetic shapes ({split})", "version": "1.0", "seed": cfg.seed}
    return {"info": info, "images": images, "annotations": annotations, "categories": categories}


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, separators=(",", ":")) + "\n")


def generate(cfg: SynthConfig, progress: bool = True) -> dict:
    """Validate ``cfg``, write images, COCO annotations and ``dataset.json``; return a summary.

    Layout: ``out/{train,val}/000000000001.jpg``, ``out/annotations/instances_{split}.json``.
    Summary: ``{"train": n_images, "val": n_images, "annotations": {split: n_instances},
    "categories": [names], "out": str}``. Files of the same names are overwritten; other files
    in ``out`` are left alone.
    """
    validate(cfg)
    out = Path(cfg.out)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    counts = {"train": cfg.num_train, "val": cfg.num_val}
    num_annotations, per_class = {}, {}
    for split, count in counts.items():
        coco = _coco(cfg, split, _render_split(cfg, split, count, progress))
        _write_json(out / "annotations" / f"instances_{split}.json", coco)
        num_annotations[split] = len(coco["annotations"])
        labels = np.array([a["category_id"] for a in coco["annotations"]], dtype=np.int64)
        per_class[split] = np.bincount(labels, minlength=cfg.num_classes + 1)[1:].tolist()
    names = category_names(cfg.num_classes)
    summary = {**counts, "annotations": num_annotations, "categories": names, "out": str(out)}
    params = {**asdict(cfg), "out": str(out)}
    _write_json(
        out / "dataset.json",
        {
            "generator": "bckd.data.synth",
            "config": params,
            "shapes": list(SHAPES),
            "textures": list(TEXTURES),
            "class_probabilities": class_probabilities(cfg.num_classes).round(6).tolist(),
            "min_visible_fraction": MIN_VISIBLE,
            "max_objects_per_image": MAX_OBJECTS,
            "annotations_per_class": per_class,
            "summary": summary,
        },
    )
    return summary


# what a set is made of; `workers` and `out` only say how and where it was written
_CONTENT_FIELDS = ("num_train", "num_val", "image_size", "num_classes", "seed", "min_object_size")


def ensure(cfg: SynthConfig, progress: bool = True) -> bool:
    """Write the set of ``cfg`` unless ``cfg.out`` holds it already; True when it wrote.

    ``cfg.out/dataset.json`` records what a set was made of, and the images are a function of
    those fields, so a matching record means the files are those ``generate`` would write. A
    record of another set raises ``ValueError`` naming the fields that differ: runs may be
    reading that set, so it is never overwritten here.
    """
    marker = Path(cfg.out) / "dataset.json"
    if marker.is_file():
        have = json.loads(marker.read_text()).get("config", {})
        want = asdict(cfg)
        fields = SynthConfig.__dataclass_fields__
        differ = {k: (have.get(k, fields[k].default), want[k]) for k in _CONTENT_FIELDS
                  if have.get(k, fields[k].default) != want[k]}
        if not differ:
            return False
        raise ValueError(f"{cfg.out} holds another synthetic set ("
                         + ", ".join(f"{k} {a} there, {b} wanted" for k, (a, b) in differ.items())
                         + "): choose another directory or remove it")
    generate(cfg, progress=progress)
    return True
