"""Synthetic COCO data: format, determinism, difficulty and argument checks."""

import json
from collections import Counter
from dataclasses import replace
from itertools import combinations
from pathlib import Path

import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from bckd.data import SynthConfig, category_names, ensure, generate, validate

SIZE = 128


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[SynthConfig, dict]:
    cfg = SynthConfig(
        out=tmp_path_factory.mktemp("synth"), num_train=60, num_val=10, image_size=SIZE, workers=2
    )
    return cfg, generate(cfg, progress=False)


def _load(cfg: SynthConfig, split: str) -> dict:
    return json.loads((cfg.out / "annotations" / f"instances_{split}.json").read_text())


def test_layout_and_summary(dataset):
    cfg, summary = dataset
    assert summary["train"] == 60 and summary["val"] == 10
    assert summary["out"] == str(cfg.out)
    for split in ("train", "val"):
        coco = _load(cfg, split)
        assert summary["annotations"][split] == len(coco["annotations"])
        for image in coco["images"]:
            assert (cfg.out / split / image["file_name"]).is_file()
    params = json.loads((cfg.out / "dataset.json").read_text())
    assert params["config"]["num_train"] == 60 and params["config"]["seed"] == 0


@pytest.mark.parametrize("split", ["train", "val"])
def test_annotations_are_consistent(dataset, split):
    cfg, _ = dataset
    coco = _load(cfg, split)
    image_ids = [image["id"] for image in coco["images"]]
    ann_ids = [ann["id"] for ann in coco["annotations"]]
    category_ids = {cat["id"] for cat in coco["categories"]}
    assert len(set(image_ids)) == len(image_ids)
    assert len(set(ann_ids)) == len(ann_ids)
    assert [cat["name"] for cat in coco["categories"]] == category_names(cfg.num_classes)
    for image in coco["images"]:
        assert (image["width"], image["height"]) == (SIZE, SIZE)
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        assert ann["image_id"] in image_ids and ann["category_id"] in category_ids
        assert ann["area"] > 0 and ann["iscrowd"] == 0
        # Area counts visible pixels, so it is at most the box area.
        assert ann["area"] <= w * h
        assert x >= 0 and y >= 0 and w >= 1 and h >= 1
        assert x + w <= SIZE and y + h <= SIZE


def test_scale_range(dataset):
    cfg, _ = dataset
    sides = [max(ann["bbox"][2:]) for ann in _load(cfg, "train")["annotations"]]
    assert min(sides) < 16
    assert max(sides) > SIZE / 4


def test_class_frequencies_are_long_tailed(dataset):
    cfg, _ = dataset
    counts = Counter(ann["category_id"] for ann in _load(cfg, "train")["annotations"])
    per_class = [counts.get(k, 0) for k in range(1, cfg.num_classes + 1)]
    # Zipf p_k ∝ 1 / (k + 1): the head class is expected 8x as frequent as the tail class.
    assert per_class[0] > 3 * max(1, per_class[-1])
    assert per_class[0] == max(per_class)


def test_crowded_scenes_with_overlap(dataset):
    cfg, _ = dataset
    coco = _load(cfg, "train")
    per_image = Counter(ann["image_id"] for ann in coco["annotations"])
    assert sum(per_image.values()) / len(coco["images"]) >= 3

    def overlap(a, b) -> bool:
        ax, ay, aw, ah = a["bbox"]
        bx, by, bw, bh = b["bbox"]
        return ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah

    by_image: dict[int, list[dict]] = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    assert any(overlap(a, b) for anns in by_image.values() for a, b in combinations(anns, 2))


def test_images_are_not_blank(dataset):
    import cv2

    cfg, _ = dataset
    image = cv2.imread(str(cfg.out / "train" / "000000000001.jpg"))
    assert image.shape == (SIZE, SIZE, 3)
    assert image.std() > 10


def _snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_deterministic_for_seed_and_workers(tmp_path):
    base = SynthConfig(out=tmp_path / "a", num_train=8, num_val=3, image_size=SIZE, workers=1)
    runs = {
        "a": base,
        "b": replace(base, out=tmp_path / "b", workers=2),
        "c": replace(base, out=tmp_path / "c", seed=1),
    }
    for cfg in runs.values():
        generate(cfg, progress=False)
    a, b, c = (_snapshot(cfg.out) for cfg in runs.values())
    # dataset.json records the output path and worker count; everything else must match.
    for snap in (a, b, c):
        snap.pop("dataset.json")
    assert a == b
    key = "annotations/instances_train.json"
    assert a[key] != c[key]
    assert a["train/000000000001.jpg"] != c["train/000000000001.jpg"]


def test_cocoeval_ground_truth_as_detections_is_perfect(dataset, capsys):
    cfg, _ = dataset
    for split in ("train", "val"):
        gt = COCO(str(cfg.out / "annotations" / f"instances_{split}.json"))
        dets = [
            {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
             "score": 1.0}
            for a in gt.dataset["annotations"]
        ]  # fmt: skip
        evaluator = COCOeval(gt, gt.loadRes(dets), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        assert evaluator.stats[0] == pytest.approx(1.0)


def test_mmdet_coco_dataset_loads_instances(dataset):
    from mmdet.datasets import CocoDataset

    cfg, _ = dataset
    names = category_names(cfg.num_classes)
    ds = CocoDataset(
        data_root=str(cfg.out),
        ann_file="annotations/instances_train.json",
        data_prefix=dict(img="train/"),
        metainfo=dict(classes=tuple(names)),
        filter_cfg=None,
        pipeline=[],
        test_mode=False,
    )
    coco = _load(cfg, "train")
    assert len(ds) == len(coco["images"])
    expected = Counter(ann["image_id"] for ann in coco["annotations"])
    for i in range(len(ds)):
        info = ds.get_data_info(i)
        assert Path(info["img_path"]).is_file()
        assert len(info["instances"]) == expected[info["img_id"]]
        labels = [inst["bbox_label"] for inst in info["instances"]]
        assert all(0 <= label < len(names) for label in labels)
        for inst in info["instances"]:
            x1, y1, x2, y2 = inst["bbox"]
            assert 0 <= x1 < x2 <= SIZE and 0 <= y1 < y2 <= SIZE


@pytest.mark.parametrize(
    "change, flag",
    [
        (dict(num_train=-3), "--num-train"),
        (dict(num_val=0), "--num-val"),
        (dict(image_size=16), "--image-size"),
        (dict(min_object_size=2), "--min-object-size"),
        (dict(num_classes=0), "--num-classes"),
        (dict(num_classes=33), "--num-classes"),
        (dict(seed=-1), "--seed"),
        (dict(workers=0), "--workers"),
        (dict(out=Path("/proc/bckd-synth")), "--out"),
    ],
)
def test_validate_names_the_bad_argument(tmp_path, change, flag):
    cfg = replace(SynthConfig(out=tmp_path / "ok"), **change)
    with pytest.raises(ValueError, match=flag):
        validate(cfg)
    with pytest.raises(ValueError, match=flag):
        generate(cfg, progress=False)


def test_validate_rejects_a_file_as_out(tmp_path):
    path = tmp_path / "file"
    path.write_text("")
    with pytest.raises(ValueError, match="--out: cannot write to"):
        validate(SynthConfig(out=path))


def test_validate_accepts_defaults(tmp_path):
    validate(SynthConfig(out=tmp_path / "new" / "dir"))
    assert (tmp_path / "new" / "dir").is_dir()
    assert not any((tmp_path / "new" / "dir").iterdir())


def test_category_names_are_stable_prefixes():
    all_names = category_names(32)
    assert len(set(all_names)) == 32
    assert category_names(8) == all_names[:8]
    # The 8-class set needs both cues: 4 shapes x 2 textures.
    shapes = {name.split("_")[0] for name in all_names[:8]}
    textures = {name.split("_")[1] for name in all_names[:8]}
    assert (len(shapes), len(textures)) == (4, 2)


def test_cli_min_object_size_reaches_the_generator(tmp_path):
    """`bckd data synth --min-object-size` sets the smallest drawn object: the set records it,
    and no whole (unoccluded, untruncated) object is smaller."""
    from cli import main

    out = tmp_path / "big"
    assert main(["data", "synth", "--out", str(out), "--num-train", "12", "--num-val", "2",
                 "--image-size", "96", "--min-object-size", "24", "--quiet"]) == 0
    assert json.loads((out / "dataset.json").read_text())["config"]["min_object_size"] == 24
    ann = json.loads((out / "annotations" / "instances_train.json").read_text())["annotations"]
    sides = [max(a["bbox"][2:]) for a in ann]
    # visible boxes shrink under occlusion; the median object stays above the floor
    assert sorted(sides)[len(sides) // 2] >= 24


def test_ensure_writes_once_and_refuses_another_set(tmp_path):
    cfg = SynthConfig(out=tmp_path / "s", num_train=3, num_val=2, image_size=64, workers=1)
    assert ensure(cfg, progress=False) is True
    stamp = (tmp_path / "s" / "annotations" / "instances_train.json").stat().st_mtime_ns
    assert ensure(replace(cfg, workers=2), progress=False) is False  # same set: nothing written
    assert (tmp_path / "s" / "annotations" / "instances_train.json").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="min_object_size 8 there, 12 wanted"):
        ensure(replace(cfg, min_object_size=12), progress=False)
