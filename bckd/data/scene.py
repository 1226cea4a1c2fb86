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

The pixels are :mod:`bckd.data.drawing`; writing the set (images, COCO files, checks of the
arguments) is :mod:`bckd.data.synth`.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from bckd.data.drawing import background, random_color, shape_mask, texture

__all__ = [
    "MAX_OBJECTS",
    "MIN_VISIBLE",
    "NUM_CATEGORIES",
    "SHAPES",
    "TEXTURES",
    "category_names",
    "category_order",
    "class_probabilities",
    "draw_scene",
]

SHAPES = ("disk", "square", "triangle", "ring", "cross", "star", "hexagon", "ellipse")
TEXTURES = ("solid", "stripes", "checker", "dots")
NUM_CATEGORIES = len(SHAPES) * len(TEXTURES)
MIN_VISIBLE = 0.4  # objects (and those they occlude) keep at least this visible fraction
MAX_OBJECTS = 12  # objects attempted per image: uniform in 1..MAX_OBJECTS
PLACEMENT_TRIES = 10  # re-draws of a position before an object is dropped


def category_order() -> list[tuple[int, int]]:
    """All (shape, texture) index pairs; every prefix of the growing grid needs both cues."""
    pairs = [(s, t) for s in range(len(SHAPES)) for t in range(len(TEXTURES))]
    # Level L holds the grid of shapes < 2 (L + 1) and textures <= L.
    return sorted(pairs, key=lambda st: (max(st[0] // 2, st[1]), st[1], st[0]))


def category_names(num_classes: int) -> list[str]:
    """Names ``"<shape>_<texture>"`` of the first ``num_classes`` categories (ids 1, 2, ...)."""
    return [f"{SHAPES[s]}_{TEXTURES[t]}" for s, t in category_order()[:num_classes]]


def class_probabilities(num_classes: int) -> np.ndarray:
    """Zipf sampling probabilities ``p_k ∝ 1 / (k + 1)``, shape ``[num_classes]``."""
    weights = 1.0 / np.arange(1, num_classes + 1)
    return weights / weights.sum()


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


def draw_scene(rng: np.random.Generator, size: int, num_classes: int,
               min_object_size: int) -> tuple[np.ndarray, list[dict]]:
    """One image ``[size, size, 3]`` (uint8, BGR for cv2) and its objects' COCO annotations
    (no ids), in drawing order; every draw comes from ``rng``, in a fixed order."""
    image = background(rng, size)
    owner = np.zeros((size, size), np.int32)  # 1-based index of the object owning each pixel
    order = category_order()
    probs = class_probabilities(num_classes)
    log_lo, log_hi = math.log(min_object_size), math.log(size / 2)
    objects: list[tuple[int, _Slices]] = []  # (label, image slices)
    visible: list[int] = []
    full: list[int] = []
    for _ in range(int(rng.integers(1, MAX_OBJECTS + 1))):
        label = int(rng.choice(num_classes, p=probs))
        shape_id, texture_id = order[label]
        obj_size = math.exp(rng.uniform(log_lo, log_hi))
        mask = shape_mask(SHAPES[shape_id], obj_size, rng.uniform(0.0, 2.0 * math.pi))
        where = _place(rng, mask, owner, visible, full)
        if where is None:
            continue
        in_image, in_mask = _clip(*where, mask.shape, size)
        inside = mask[in_mask]
        # Object colors contrast with the local background; the class never picks them.
        primary = random_color(rng, image[in_image].reshape(-1, 3).mean(axis=0), 120.0)
        colors = np.stack([primary, random_color(rng, primary, 180.0)])
        patch = texture(TEXTURES[texture_id], mask.shape, obj_size, colors, rng)[in_mask]
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
    return out, [_annotation(owner, k + 1, *obj) for k, obj in enumerate(objects)]


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
