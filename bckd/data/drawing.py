"""The pixels of the synthetic data: shape masks, textures, object colors and cluttered
backgrounds, each drawn from a caller's random generator (what a scene puts where is
:mod:`bckd.data.scene`)."""

from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = ["SHAPE_POLYGONS", "background", "random_color", "shape_mask", "texture"]


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
SHAPE_POLYGONS: dict[str, tuple[np.ndarray, np.ndarray | None]] = {
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


def shape_mask(shape: str, size: float, angle: float) -> np.ndarray:
    """Mask ``[h, w]`` (bool) of ``shape`` rotated by ``angle`` (rad); ``max(h, w) ~ size`` px."""
    outer, hole = SHAPE_POLYGONS[shape]
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


def random_color(rng: np.random.Generator, away_from: np.ndarray, min_dist: float) -> np.ndarray:
    """RGB color ``[3]`` (float) at L1 distance >= ``min_dist`` from ``away_from`` if found."""
    for _ in range(8):
        color = rng.uniform(0.0, 255.0, 3)
        if np.abs(color - away_from).sum() >= min_dist:
            break
    return color


def texture(
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


def background(rng: np.random.Generator, size: int) -> np.ndarray:
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
