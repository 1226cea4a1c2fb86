"""Synthetic COCO-format detection data: textured shapes on cluttered backgrounds.

No dataset can be downloaded, so every model in this project trains and evaluates on this
generator. It is built to be a real detection problem:

* **Classes are shape x texture.** 8 shapes (disk, square, triangle, ring, cross, star,
  hexagon, ellipse) times 4 textures (solid, stripes, checker, dots) give 32 categories. Colors
  are drawn independently of the class, so color alone never tells classes apart. The first
  ``num_classes`` categories of a fixed order are used; the order grows a shape x texture grid
  (2 shapes x 1 texture, then 4 x 2, 6 x 3, 8 x 4) so that any prefix needs both cues, e.g.
  ``num_classes=8`` is {disk, square, triangle, ring} x {solid, stripes}.
* **Scale range.** The object size (largest side of the full box of the rotated shape, in
  pixels) is log-uniform in ``[min_object_size, image_size / 2]``. Rotation is uniform.
* **Long tail.** Classes are sampled with Zipf probabilities ``p_k ∝ 1 / (k + 1)`` for the
  k-th category (0-based), so class 0 is ``num_classes`` times as frequent as the last one.
* **Occlusion and truncation.** Objects are drawn in order, later ones occlude earlier ones,
  and objects may stick out of the image by up to a quarter of their size. The visible fraction
  of an object is (pixels inside the image and not covered by later objects) / (pixels of its
  full shape). An object is only placed if, afterwards, it and every earlier object keep a
  visible fraction >= ``MIN_VISIBLE`` (0.4); otherwise the position is re-drawn (a few tries,
  then the object is dropped). Hence every drawn object is annotated and no visible shape is
  left unlabeled.
* **Crowded scenes.** 1..12 objects are attempted per image (about 6.5 are placed on average
  at the default settings).
* **Clutter.** Backgrounds are color gradients with low-frequency color noise, soft irregular
  blobs and random strokes/arcs (never closed shapes); pixel noise and a slight blur follow.

Annotations follow COCO's convention for visible (modal) objects: ``bbox`` is the tight
``[x, y, w, h]`` box of the visible pixels (pixel units, ``w = x_max - x_min + 1``), and
``area`` is the number of visible pixels (a mask area, as in COCO, not the box area).
``segmentation`` is omitted.

Each image has its own random generator seeded by ``(seed, split, index)``, so the output is
byte-identical whatever the number of workers.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from multiprocessing import Pool
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

__all__ = [
    "MIN_VISIBLE",
    "SHAPES",
    "TEXTURES",
    "SynthConfig",
    "category_names",
    "class_probabilities",
    "generate",
    "validate",
]

SHAPES = ("disk", "square", "triangle", "ring", "cross", "star", "hexagon", "ellipse")
TEXTURES = ("solid", "stripes", "checker", "dots")
NUM_CATEGORIES = len(SHAPES) * len(TEXTURES)
MIN_VISIBLE = 0.4  # objects (and those they occlude) keep at least this visible fraction
MAX_OBJECTS = 12  # objects attempted per image: uniform in 1..MAX_OBJECTS
PLACEMENT_TRIES = 10  # re-draws of a position before an object is dropped
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


def _category_order() -> list[tuple[int, int]]:
    """All (shape, texture) index pairs; every prefix of the growing grid needs both cues."""
    pairs = [(s, t) for s in range(len(SHAPES)) for t in range(len(TEXTURES))]
    # Level L holds the grid of shapes < 2 (L + 1) and textures <= L.
    return sorted(pairs, key=lambda st: (max(st[0] // 2, st[1]), st[1], st[0]))


def category_names(num_classes: int) -> list[str]:
    """Names ``"<shape>_<texture>"`` of the first ``num_classes`` categories (ids 1, 2, ...)."""
    return [f"{SHAPES[s]}_{TEXTURES[t]}" for s, t in _category_order()[:num_classes]]


def class_probabilities(num_classes: int) -> np.ndarray:
    """Zipf sampling probabilities ``p_k ∝ 1 / (k + 1)``, shape ``[num_classes]``."""
    weights = 1.0 / np.arange(1, num_classes + 1)
    return weights / weights.sum()


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


# ----------------------------------------------------------------------------- shapes


def _circle(n: int = 48) -> np.ndarray:
    angles = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)  # [n, 2]


def _star(points: int = 5, inner: float = 0.42) -> np.ndarray:
    radii = np.tile([1.0, inner], points)
    return _circle(2 * points) * radii[:, None]


_CROSS = np.array(
    [[-0.3, -1], [0.3, -1], [0.3, -0.3], [1, -0.3], [1, 0.3], [0.3, 0.3],
     [0.3, 1], [-0.3, 1], [-0.3, 0.3], [-1, 0.3], [-1, -0.3], [-0.3, -0.3]]
)  # fmt: skip

# Unit polygons (outer contour, hole or None), points [n, 2] as (x, y).
_SHAPE_POLYGONS: dict[str, tuple[np.ndarray, np.ndarray | None]] = {
    "disk": (_circle(), None),
    "square": (np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]), None),
    "triangle": (_circle(3), None),
    "ring": (_circle(), 0.55 * _circle()),
    "cross": (_CROSS, None),
    "star": (_star(), None),
    "hexagon": (_circle(6), None),
    "ellipse": (_circle() * np.array([1.0, 0.5]), None),
}

_SUBPIXEL_BITS = 4  # cv2.fillPoly fixed-point precision: coordinates in 1/16 px


def _shape_mask(shape: str, size: float, angle: float) -> np.ndarray:
    """Mask ``[h, w]`` (bool) of ``shape`` rotated by ``angle`` (rad); ``max(h, w) ~ size`` px."""
    outer, hole = _SHAPE_POLYGONS[shape]
    cos, sin = math.cos(angle), math.sin(angle)
    rotation = np.array([[cos, -sin], [sin, cos]])
    outer = outer @ rotation.T
    lo, hi = outer.min(axis=0), outer.max(axis=0)
    # cv2 puts pixel centers at integer coordinates: an extent of size - 1 covers size pixels.
    scale = (size - 1.0) / float((hi - lo).max())
    h, w = (np.ceil((hi - lo) * scale) + 1).astype(int)[::-1]
    mask = np.zeros((h, w), np.uint8)
    unit = 1 << _SUBPIXEL_BITS

    def draw(points: np.ndarray, value: int) -> None:
        fixed = np.round((points - lo) * scale * unit).astype(np.int32)
        cv2.fillPoly(mask, [fixed], value, cv2.LINE_8, _SUBPIXEL_BITS)

    draw(outer, 1)
    if hole is not None:
        draw(hole @ rotation.T, 0)
    return mask.astype(bool)


# ---------------------------------------------------------------------------- textures


def _random_color(rng: np.random.Generator, away_from: np.ndarray, min_dist: float) -> np.ndarray:
    """RGB color ``[3]`` (float) at L1 distance >= ``min_dist`` from ``away_from`` if found."""
    for _ in range(8):
        color = rng.uniform(0.0, 255.0, 3)
        if np.abs(color - away_from).sum() >= min_dist:
            break
    return color


def _texture(
    texture: str, shape: tuple[int, int], size: float, colors: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Texture patch ``[h, w, 3]`` (float) in object coordinates; ``colors`` is ``[2, 3]``."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    # Linear shading (+-25 % across the object) so that even "solid" is not one flat color.
    light = rng.uniform(-0.25, 0.25, 2) / size
    shading = 1.0 + light[0] * (xx - w / 2) + light[1] * (yy - h / 2)
    if texture == "solid":
        return colors[0] * shading[..., None]
    # The period follows the object size so the pattern stays readable at every scale.
    period = max(3.0, size / rng.uniform(3.0, 5.0))
    angle = rng.uniform(0.0, math.pi)
    u = xx * math.cos(angle) + yy * math.sin(angle) + rng.uniform(0.0, period)
    v = -xx * math.sin(angle) + yy * math.cos(angle) + rng.uniform(0.0, period)
    if texture == "stripes":
        pattern = np.floor(u / period) % 2 == 0
    elif texture == "checker":
        pattern = (np.floor(u / period) + np.floor(v / period)) % 2 == 0
    else:  # dots
        du, dv = u % period - period / 2, v % period - period / 2
        pattern = du * du + dv * dv <= (0.3 * period) ** 2
    return np.where(pattern[..., None], colors[0], colors[1]) * shading[..., None]


# -------------------------------------------------------------------------- background


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Cluttered background ``[size, size, 3]`` (float, 0..255): gradient, noise, blobs, strokes."""
    # Linear gradient between two colors along a random direction.
    angle = rng.uniform(0.0, 2.0 * math.pi)
    ramp = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    # The projection spans +-sqrt(2); t is in [0, 1].
    t = 0.5 + (ramp[None, :] * math.cos(angle) + ramp[:, None] * math.sin(angle)) / 8**0.5
    c0, c1 = rng.uniform(0.0, 255.0, (2, 3)).astype(np.float32)
    image = c0 + t[..., None] * (c1 - c0)
    # Low-frequency color noise.
    cells = int(rng.integers(3, 9))
    coarse = rng.normal(0.0, 25.0, (cells, cells, 3)).astype(np.float32)
    image += cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    # Soft irregular blobs: jittered-radius polygons, blurred so they have no crisp outline.
    blobs = np.zeros((size, size, 3), np.float32)
    alpha = np.zeros((size, size), np.float32)
    for _ in range(int(rng.integers(0, 5))):
        radius = rng.uniform(0.04, 0.2) * size
        outline = _circle(16) * rng.uniform(0.4, 1.0, (16, 1)) * radius + rng.uniform(0, size, 2)
        points = [np.round(outline).astype(np.int32)]
        cv2.fillPoly(blobs, points, rng.uniform(0.0, 255.0, 3).tolist())
        cv2.fillPoly(alpha, points, float(rng.uniform(0.3, 0.8)))
    sigma = 0.03 * size
    blobs = cv2.GaussianBlur(blobs, (0, 0), sigma)
    alpha = cv2.GaussianBlur(alpha, (0, 0), sigma)[..., None]
    image = image * (1.0 - alpha) + blobs
    # Open strokes: polylines and arcs (an arc spans < 270 degrees so it never reads as a ring).
    for _ in range(int(rng.integers(2, 12))):
        color = rng.uniform(0.0, 255.0, 3).tolist()
        thickness = int(rng.integers(1, 4))
        if rng.random() < 0.5:
            # At most 3 points: an open polyline cannot outline a triangle or square.
            points = rng.uniform(0.0, size, (int(rng.integers(2, 4)), 1, 2)).astype(np.int32)
            cv2.polylines(image, [points], False, color, thickness, cv2.LINE_AA)
        else:
            center = tuple(int(c) for c in rng.integers(0, size, 2))
            axes = tuple(int(a) for a in rng.integers(size // 16, size // 3, 2))
            start = float(rng.uniform(0.0, 360.0))
            span = float(rng.uniform(30.0, 270.0))
            rotation = float(rng.uniform(0.0, 180.0))
            cv2.ellipse(image, center, axes, rotation, start, start + span, color, thickness,
                        cv2.LINE_AA)  # fmt: skip
    return image


# ------------------------------------------------------------------------------ images


def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Independent generator per image, so parallel generation is deterministic."""
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), index]))


_Slices = tuple[slice, slice]


def _clip(y: int, x: int, shape: tuple[int, int], size: int) -> tuple[_Slices, _Slices]:
    """_Slices ``(image, mask)`` of the part of a ``shape`` mask at top-left ``(y, x)`` in frame."""
    h, w = shape
    image = (slice(max(0, y), min(size, y + h)), slice(max(0, x), min(size, x + w)))
    mask = (slice(max(0, -y), min(h, size - y)), slice(max(0, -x), min(w, size - x)))
    return image, mask


def _place(
    rng: np.random.Generator,
    mask: np.ndarray,
    owner: np.ndarray,
    visible: list[int],
    full: list[int],
) -> tuple[int, int] | None:
    """Top-left ``(y, x)`` where ``mask`` keeps itself and earlier objects >= MIN_VISIBLE."""
    size = owner.shape[0]
    h, w = mask.shape
    for _ in range(PLACEMENT_TRIES):
        # Up to a quarter of the object may fall outside the image (truncation).
        y = int(rng.integers(-(h // 4), size - h + h // 4 + 1))
        x = int(rng.integers(-(w // 4), size - w + w // 4 + 1))
        in_image, in_mask = _clip(y, x, mask.shape, size)
        inside = mask[in_mask]
        if inside.sum() < MIN_VISIBLE * mask.sum():
            continue
        region = owner[in_image]
        # covered[i]: pixels of object i (1-based, 0 = background) the new object would hide.
        covered = np.bincount(region[inside], minlength=len(visible) + 1)[1:]
        if all(v - c >= MIN_VISIBLE * f for v, c, f in zip(visible, covered, full, strict=True)):
            return y, x
    return None


def _render(task: tuple[SynthConfig, str, int]) -> list[dict]:
    """Draw and save one image; return its annotations (no ids) in drawing order."""
    cfg, split, index = task
    rng = _image_rng(cfg.seed, split, index)
    size = cfg.image_size
    image = _background(rng, size)
    owner = np.zeros((size, size), np.int32)  # 1-based index of the object owning each pixel
    order = _category_order()
    probs = class_probabilities(cfg.num_classes)
    log_lo, log_hi = math.log(cfg.min_object_size), math.log(size / 2)
    objects: list[tuple[int, _Slices]] = []  # (label, image slices)
    visible: list[int] = []
    full: list[int] = []
    for _ in range(int(rng.integers(1, MAX_OBJECTS + 1))):
        label = int(rng.choice(cfg.num_classes, p=probs))
        shape_id, texture_id = order[label]
        obj_size = math.exp(rng.uniform(log_lo, log_hi))
        mask = _shape_mask(SHAPES[shape_id], obj_size, rng.uniform(0.0, 2.0 * math.pi))
        where = _place(rng, mask, owner, visible, full)
        if where is None:
            continue
        in_image, in_mask = _clip(*where, mask.shape, size)
        inside = mask[in_mask]
        # Object colors contrast with the local background; the class never picks them.
        primary = _random_color(rng, image[in_image].reshape(-1, 3).mean(axis=0), 120.0)
        colors = np.stack([primary, _random_color(rng, primary, 180.0)])
        patch = _texture(TEXTURES[texture_id], mask.shape, obj_size, colors, rng)[in_mask]
        image[in_image][inside] = patch[inside]
        region = owner[in_image]
        covered = np.bincount(region[inside], minlength=len(visible) + 1)[1:]
        visible = [v - int(c) for v, c in zip(visible, covered, strict=True)]
        region[inside] = len(objects) + 1
        objects.append((label, in_image))
        visible.append(int(inside.sum()))
        full.append(int(mask.sum()))
    image += rng.normal(0.0, rng.uniform(2.0, 10.0), image.shape).astype(np.float32)
    if rng.random() < 0.5:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 0.8))
    out = np.clip(image, 0, 255).astype(np.uint8)[..., ::-1]  # RGB -> BGR for cv2
    path = Path(cfg.out) / split / _file_name(index)
    cv2.imwrite(str(path), out, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    return [_annotation(owner, k + 1, *obj) for k, obj in enumerate(objects)]


def _annotation(owner: np.ndarray, key: int, label: int, in_image: _Slices) -> dict:
    """COCO fields of object ``key`` (drawn in ``in_image``) from its visible ``owner`` pixels."""
    rows, cols = np.nonzero(owner[in_image] == key)
    x0, y0 = in_image[1].start + int(cols.min()), in_image[0].start + int(rows.min())
    bw, bh = int(cols.max()) - int(cols.min()) + 1, int(rows.max()) - int(rows.min()) + 1
    return {
        "category_id": label + 1,
        "bbox": [float(x0), float(y0), float(bw), float(bh)],
        "area": float(rows.size),
        "iscrowd": 0,
    }


def _file_name(index: int) -> str:
    return f"{index + 1:012d}.jpg"


# ------------------------------------------------------------------------------ driver


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
