"""Validate a COCO-format detection data set before anything trains on it.

``check_dataset(root)`` reads each split's annotation file with pycocotools and checks what a
training job would otherwise find out hours in, or never:

* every image file exists and decodes, and its size is the annotation's ``width`` x ``height``;
* every box has a positive size and lies inside its image (``x + w <= width``, COCO's
  ``[x, y, w, h]`` in pixels);
* every annotation's ``image_id`` and ``category_id`` exist, and all splits have the same
  categories (ids and names) in the same order: mmdet numbers its labels in the file's order.

It returns a :class:`DataSetSummary` (images, boxes per class, a box-size histogram per split)
or raises :class:`DataSetError` listing the problems, each naming the file, the image or
annotation id and the value. The layout is the one ``bckd data synth`` writes:
``root/annotations/instances_{train,val}.json`` and ``root/{train,val}/`` images.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2

__all__ = ["DEFAULT_LAYOUT", "DataSetError", "DataSetSummary", "SplitLayout", "SplitSummary",
           "check_dataset", "read_categories"]

MAX_PROBLEMS = 50  # listed in one error; a broken set would otherwise print one line per box
EDGE_EPS = 1e-3  # px: float boxes that end exactly on the border survive rounding
# Box side sqrt(w * h) in px: COCO's ranges (small < 32, medium < 96, large) and finer bins.
COCO_RANGES = (("small", 0.0, 32.0), ("medium", 32.0, 96.0), ("large", 96.0, math.inf))
SIZE_BINS = (0, 8, 16, 32, 64, 96, 128, 256)


@dataclass(frozen=True)
class SplitLayout:
    """Where one split lives, relative to the data set's root."""

    ann_file: str  # e.g. annotations/instances_train.json
    image_dir: str  # e.g. train/ (a COCO file_name is relative to it)


DEFAULT_LAYOUT = {"train": SplitLayout("annotations/instances_train.json", "train/"),
                  "val": SplitLayout("annotations/instances_val.json", "val/")}


@dataclass(frozen=True)
class SplitSummary:
    ann_file: str
    image_dir: str
    images: int
    boxes: int
    boxes_per_class: dict[str, int]  # class name -> boxes, in the file's category order
    sizes: dict[str, int]  # COCO's small / medium / large, by box side sqrt(w * h)
    size_bins: dict[str, int]  # finer: "0-8", "8-16", ..., "256+" px


@dataclass(frozen=True)
class DataSetSummary:
    root: str
    classes: list[str]  # category names in the file's order (mmdet's labels): metainfo.classes
    category_ids: list[int]
    splits: dict[str, SplitSummary]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> DataSetSummary:
        splits = {k: SplitSummary(**v) for k, v in data["splits"].items()}
        return cls(data["root"], list(data["classes"]), list(data["category_ids"]), splits)


class DataSetError(ValueError):
    """A data set that fails the checks; ``problems`` lists each one."""

    def __init__(self, root: Path, problems: list[str]) -> None:
        shown = problems[:MAX_PROBLEMS]
        more = f"\n  ... and more (first {MAX_PROBLEMS} shown)" if len(problems) > len(shown) \
            else ""
        super().__init__(f"data set {root}: {len(shown)} problem(s)\n  " + "\n  ".join(shown)
                         + more)
        self.root = root
        self.problems = shown


def _bin_label(i: int) -> str:
    lo = SIZE_BINS[i]
    return f"{lo}-{SIZE_BINS[i + 1]}" if i + 1 < len(SIZE_BINS) else f"{lo}+"


def _load_coco(ann_file: Path, problems: list[str]):
    from pycocotools.coco import COCO

    if not ann_file.is_file():
        problems.append(f"{ann_file}: annotation file does not exist")
        return None
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints its progress
            return COCO(str(ann_file))
    except Exception as err:  # invalid JSON, not a dict, missing keys: name the file
        problems.append(f"{ann_file}: not a COCO annotation file: {type(err).__name__}: {err}")
        return None


def _check_images(coco, ann_file: Path, image_dir: Path, problems: list[str]) -> None:
    listed = coco.dataset.get("images", [])
    if len(listed) != len(coco.imgs):
        problems.append(f"{ann_file}: image ids repeat ({len(listed)} images, "
                        f"{len(coco.imgs)} ids)")
    for img_id, img in coco.imgs.items():
        where = f"{ann_file}: image id {img_id}"
        path = image_dir / str(img.get("file_name", ""))
        if not path.is_file():
            problems.append(f"{where}: file {path} does not exist")
            continue
        decoded = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if decoded is None:
            problems.append(f"{where}: file {path} does not decode as an image")
            continue
        height, width = decoded.shape[:2]
        if (img.get("width"), img.get("height")) != (width, height):
            problems.append(f"{where}: file {path} is {width}x{height}, the annotation says "
                            f"width={img.get('width')!r} height={img.get('height')!r}")


def _check_boxes(coco, ann_file: Path, problems: list[str]) -> None:
    for ann_id, ann in coco.anns.items():
        where = f"{ann_file}: annotation id {ann_id} (image id {ann.get('image_id')!r})"
        if ann.get("category_id") not in coco.cats:
            problems.append(f"{where}: category_id {ann.get('category_id')!r} is not a "
                            f"category of the file ({sorted(coco.cats)})")
        img = coco.imgs.get(ann.get("image_id"))
        if img is None:
            problems.append(f"{where}: image_id {ann.get('image_id')!r} is not an image of "
                            "the file")
            continue
        box = ann.get("bbox")
        if not (isinstance(box, list) and len(box) == 4
                and all(isinstance(v, int | float) for v in box)):
            problems.append(f"{where}: bbox {box!r} is not [x, y, w, h]")
            continue
        x, y, w, h = box
        if w <= 0 or h <= 0:
            problems.append(f"{where}: bbox {box!r} has no positive size")
        elif x < -EDGE_EPS or y < -EDGE_EPS or x + w > img["width"] + EDGE_EPS \
                or y + h > img["height"] + EDGE_EPS:
            problems.append(f"{where}: bbox {box!r} is outside the {img['width']}x"
                            f"{img['height']} image")


def _summarize(coco, layout: SplitLayout, names: dict[int, str]) -> SplitSummary:
    per_class = Counter(a.get("category_id") for a in coco.anns.values())
    sizes = Counter()
    bins = Counter()
    for ann in coco.anns.values():
        side = math.sqrt(max(ann["bbox"][2], 0) * max(ann["bbox"][3], 0))
        sizes.update(n for n, lo, hi in COCO_RANGES if lo <= side < hi)
        bins[_bin_label(max(i for i, lo in enumerate(SIZE_BINS) if side >= lo))] += 1
    return SplitSummary(
        ann_file=layout.ann_file, image_dir=layout.image_dir, images=len(coco.imgs),
        boxes=len(coco.anns), boxes_per_class={names[c]: per_class.get(c, 0) for c in names},
        sizes={n: sizes.get(n, 0) for n, _, _ in COCO_RANGES},
        size_bins={_bin_label(i): bins.get(_bin_label(i), 0) for i in range(len(SIZE_BINS))})


def _categories(coco) -> dict[int, str]:
    """Category id -> name in the file's order, which is mmdet's label order: its CocoDataset
    and CocoMetric number the classes as ``getCatIds`` lists them, whatever the ids."""
    return {c["id"]: c.get("name", str(c["id"])) for c in coco.dataset.get("categories", [])}


def check_dataset(root: str | Path, layout: Mapping[str, SplitLayout] | None = None,
                  decode: bool = True) -> DataSetSummary:
    """Check every split of ``layout`` (default :data:`DEFAULT_LAYOUT`) under ``root``.

    ``decode=False`` skips opening the image files (a quick look at the annotations only).
    Raises :class:`DataSetError` naming every problem found (up to ``MAX_PROBLEMS``).
    """
    root = Path(root)
    layout = dict(layout or DEFAULT_LAYOUT)
    problems: list[str] = []
    if not root.is_dir():
        raise DataSetError(root, [f"{root}: not a directory"])
    cocos = {split: _load_coco(root / lay.ann_file, problems) for split, lay in layout.items()}
    loaded = {split: c for split, c in cocos.items() if c is not None}
    for split, coco in loaded.items():
        ann_file = root / layout[split].ann_file
        if not coco.cats:
            problems.append(f"{ann_file}: no categories")
        if decode:
            _check_images(coco, ann_file, root / layout[split].image_dir, problems)
        _check_boxes(coco, ann_file, problems)
    names = {split: _categories(c) for split, c in loaded.items()}
    first = next(iter(names), None)
    for split, cats in names.items():
        if list(cats.items()) != list(names[first].items()):  # the order is the labels
            problems.append(f"{root / layout[split].ann_file}: categories {cats} differ from "
                            f"{first}'s {names[first]} (ids, names and their order)")
    if problems:
        raise DataSetError(root, problems)
    cats = names[first]
    return DataSetSummary(root=str(root), classes=list(cats.values()), category_ids=list(cats),
                          splits={s: _summarize(c, layout[s], cats) for s, c in loaded.items()})


def read_categories(ann_file: str | Path) -> list[str]:
    """The category names of one COCO file in its order, mmdet's labels' (no other check)."""
    problems: list[str] = []
    coco = _load_coco(Path(ann_file), problems)
    if coco is None:
        raise DataSetError(Path(ann_file).parent, problems)
    return list(_categories(coco).values())
