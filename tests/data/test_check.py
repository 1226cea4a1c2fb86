"""``bckd data check``: a real synthetic set passes with its counts; each kind of broken set is
refused naming the file, the id and the value."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bckd.data import SynthConfig, generate
from bckd.data.check import DataSetError, SplitLayout, check_dataset, read_categories

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("check") / "set"
    generate(SynthConfig(out=out, num_train=8, num_val=4, image_size=96, num_classes=4,
                         workers=1), progress=False)
    return out


def broken(synth: Path, tmp_path: Path, split: str, change) -> Path:
    """A copy of the set whose ``split`` annotations went through ``change(coco)``."""
    root = tmp_path / "set"
    shutil.copytree(synth, root)
    path = root / "annotations" / f"instances_{split}.json"
    coco = json.loads(path.read_text())
    change(coco)
    path.write_text(json.dumps(coco))
    return root


def test_a_synthetic_set_passes_with_its_counts(synth):
    summary = check_dataset(synth)
    train = json.loads((synth / "annotations/instances_train.json").read_text())
    assert summary.classes == [c["name"] for c in train["categories"]]
    assert len(summary.classes) == 4
    assert summary.splits["train"].images == 8 and summary.splits["val"].images == 4
    assert summary.splits["train"].boxes == len(train["annotations"])
    assert sum(summary.splits["train"].boxes_per_class.values()) == len(train["annotations"])
    for s in summary.splits.values():
        assert sum(s.sizes.values()) == sum(s.size_bins.values()) == s.boxes
    assert read_categories(synth / "annotations/instances_val.json") == summary.classes
    again = type(summary).from_dict(json.loads(json.dumps(summary.to_dict())))
    assert again == summary


def _first(coco: dict, key: str) -> dict:
    return coco[key][0]


CASES = {
    "box outside": ("train", lambda c: _first(c, "annotations").update(bbox=[90, 2, 20, 5]),
                    ["annotation id 1", "[90, 2, 20, 5]", "outside the 96x96 image"]),
    "empty box": ("val", lambda c: _first(c, "annotations").update(bbox=[3, 3, 0, 4]),
                  ["instances_val.json", "annotation id 1", "no positive size"]),
    "unknown category": ("train", lambda c: _first(c, "annotations").update(category_id=77),
                         ["annotation id 1", "category_id 77"]),
    "wrong size": ("train", lambda c: _first(c, "images").update(width=100),
                   ["image id 1", "is 96x96", "width=100"]),
    "missing image": ("val", lambda c: _first(c, "images").update(file_name="nope.jpg"),
                      ["image id 1", "nope.jpg does not exist"]),
    "other categories": ("val", lambda c: c["categories"][0].update(name="cat"),
                         ["instances_val.json: categories", "'cat'", "differ from train"]),
    # mmdet numbers labels in the file's order: train and val must list them alike
    "other order": ("val", lambda c: c["categories"].reverse(),
                    ["instances_val.json: categories", "differ from train", "their order"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_broken_set_is_refused_naming_file_id_and_value(synth, tmp_path, case):
    split, change, words = CASES[case]
    root = broken(synth, tmp_path, split, change)
    with pytest.raises(DataSetError) as err:
        check_dataset(root)
    for word in words:
        assert word in str(err.value), (case, str(err.value))


def test_an_image_that_does_not_decode(synth, tmp_path):
    root = broken(synth, tmp_path, "train", lambda c: None)
    name = json.loads((root / "annotations/instances_train.json").read_text()
                      )["images"][2]["file_name"]
    (root / "train" / name).write_bytes(b"not a jpeg")
    with pytest.raises(DataSetError, match=f"image id 3: file .*{name} does not decode"):
        check_dataset(root)
    check_dataset(root, decode=False)  # annotations alone are fine


def test_the_command_prints_the_summary_and_takes_other_paths(synth, tmp_path):
    r = subprocess.run([sys.executable, "-m", "cli", "data", "check", str(synth)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "4 classes, ok" in r.stdout and "train: 8 images" in r.stdout
    assert "small" in r.stdout and "[8-16]" in r.stdout
    root = tmp_path / "moved"
    shutil.copytree(synth, root)
    (root / "annotations/instances_val.json").rename(root / "val.json")
    with pytest.raises(DataSetError, match="instances_val.json: annotation file does not exist"):
        check_dataset(root)
    layout = {"train": SplitLayout("annotations/instances_train.json", "train/"),
              "val": SplitLayout("val.json", "val/")}
    assert check_dataset(root, layout).splits["val"].ann_file == "val.json"
    r = subprocess.run([sys.executable, "-m", "cli", "data", "check", str(root),
                        "--val-ann", "missing.json"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "missing.json: annotation file does not exist" in r.stderr
