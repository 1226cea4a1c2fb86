"""README "Your own data, start to finish": its shell block, run command by command, in order.

The commands are the README's own, parsed from the section's ``bash`` block, so an edit there
that breaks the path fails here. They run as a user types them (``bash -c``, globs included)
through the real parts: ``bckd serve`` (Ray with token auth, MLflow, the API under uvicorn on
loopback), the real ``jobs.train`` on a set this test draws, ``bckd export`` and ``bckd
predict``. What the test changes in each line, and only that (:meth:`Session.line`):
``.venv/bin/bckd`` is this interpreter's ``-m cli``; ``data/shapes`` and MLflow's URL are this
test's; ``<... run id>`` is the run the earlier job printed; ``bckd serve`` gets free ports
and the test's state directory; and, appended (:data:`EXTRA`), one epoch per job and a score
threshold of 0 for evaluation, export and predict (a one-epoch detector scores below its
head's 0.05; 0 keeps up to 100 boxes per image to evaluate, compare and check).

The set is not the synthetic generator's: 3 classes drawn with cv2 (filled disks, squares and
crosses in fixed colours on a noisy grey background), 128 px, COCO category ids 9, 5, 11
listed in that order (not sorted, as label tools write them; mmdet numbers its labels in the
file's order), image ids from 1000, images in a ``shots/`` folder of each split.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from service.stack.embedded import free_port
from service.stack.mlflow_server import admin_login, admin_uri

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Your own data, start to finish"
# The section's commands, by their words after `bckd`, in this order, each once.
PATH = ("data check", "serve", "jobs datasets register", "jobs submit train",
        "jobs submit distill", "jobs compare", "jobs mlflow-login", "export", "predict")
EVAL = re.compile(r'eval "\$\((.*)\)"')  # a line whose output the shell runs: `export K=V`
CATEGORIES = [{"id": 9, "name": "square"}, {"id": 5, "name": "disk"},
              {"id": 11, "name": "cross"}]
COLOURS = {9: (40, 170, 40), 5: (200, 60, 30), 11: (30, 90, 220)}  # BGR, one per class
SPLITS = {"train": 32, "val": 12}
SIZE = 128
TINY = {"train_cfg.max_epochs": 1, "train_dataloader.batch_size": 4,
        "val_dataloader.batch_size": 4, "train_dataloader.num_workers": 0,
        "val_dataloader.num_workers": 0, "train_dataloader.persistent_workers": False,
        "val_dataloader.persistent_workers": False}


def _sets(overrides: dict) -> list[str]:
    return [a for k, v in overrides.items() for a in ("--set", f"{k}={json.dumps(v)}")]


# Per command (words after `bckd`), what this test appends to the README's line: one epoch,
# and every box evaluated (a one-epoch model scores below 0.05: COCO would find no result)
EXTRA = {
    "jobs submit train": _sets({**TINY, "model.test_cfg.score_thr": 0.0}),
    "jobs submit distill": _sets({**TINY, "model.student.test_cfg.score_thr": 0.0}),
    "export": ["--score-thr", "0"],
    "predict": ["--score-thr", "0", "--no-draw"],
}
RUN_IDS = {"jobs submit train": "<teacher run id>", "jobs submit distill": "<student run id>"}


# ---------------------------------------------------------------- the README's block


def readme_block() -> list[str]:
    """The section's ``bash`` block as command lines: continuations joined, comments and blank
    lines dropped."""
    text = (ROOT / "README.md").read_text()
    assert SECTION in text, f"README.md has no section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    found = re.search(r"```bash\n(.*?)```", section, re.S)
    assert found, f"{SECTION}: no ```bash block"
    joined = found.group(1).replace("\\\n", " ")
    lines = (re.sub(r"(^|\s+)#.*$", "", line).strip() for line in joined.splitlines())
    return [line for line in lines if line]


def kind_of(line: str) -> str:
    """The command of a block line (inside an ``eval "$(...)"``), as :data:`PATH` names it
    (``jobs submit train``), else its words after ``bckd``."""
    if found := EVAL.fullmatch(line):
        line = found.group(1)
    head, _, rest = line.partition(" ")
    assert head == ".venv/bin/bckd", f"not a bckd command: {line!r}"
    return next((k for k in sorted(PATH, key=len, reverse=True)
                 if rest == k or rest.startswith(k + " ")), rest)


def test_the_readme_block_is_the_whole_path():
    lines = readme_block()
    assert tuple(kind_of(line) for line in lines) == PATH, lines
    placeholders = set(re.findall(r"<[^>]+>", " ".join(lines)))
    assert placeholders == set(RUN_IDS.values()), placeholders


# ---------------------------------------------------------------- the set


def _place(rng: np.random.Generator, taken: list[tuple[int, int, int, int]]):
    """A free square ``(x, y, side)`` that overlaps none of ``taken`` (or None)."""
    for _ in range(50):
        side = int(rng.integers(20, 44))
        x, y = (int(v) for v in rng.integers(2, SIZE - side - 2, size=2))
        if all(x + side < a or a + s < x or y + side < b or b + s < y for a, b, s, _ in taken):
            return x, y, side
    return None


def _draw(img: np.ndarray, cat: int, x: int, y: int, side: int) -> None:
    colour = COLOURS[cat]
    if cat == 5:
        cv2.circle(img, (x + side // 2, y + side // 2), side // 2, colour, -1)
    elif cat == 9:
        cv2.rectangle(img, (x, y), (x + side - 1, y + side - 1), colour, -1)
    else:  # a plus sign filling its square
        bar = max(side // 4, 3)
        lo, hi = (side - bar) // 2, (side + bar) // 2
        cv2.rectangle(img, (x + lo, y), (x + hi, y + side - 1), colour, -1)
        cv2.rectangle(img, (x, y + lo), (x + side - 1, y + hi), colour, -1)


def draw_set(root: Path, seed: int = 0) -> None:
    """``root/annotations/instances_{train,val}.json`` and ``root/{train,val}/shots/*.png``:
    1-3 objects per image, every class in every three images."""
    rng = np.random.default_rng(seed)
    image_id, ann_id = 1000, 500
    (root / "annotations").mkdir(parents=True)
    for split, count in SPLITS.items():
        (root / split / "shots").mkdir(parents=True)
        images, anns = [], []
        for i in range(count):
            img = np.clip(rng.normal(128, 12, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
            taken: list[tuple[int, int, int, int]] = []
            for k in range(int(rng.integers(1, 4))):
                spot = _place(rng, taken)
                if spot is not None:
                    cat = CATEGORIES[(i + k) % 3]["id"]
                    _draw(img, cat, *spot)
                    taken.append((*spot, cat))
            name = f"shots/{split}_{i:03d}.png"
            cv2.imwrite(str(root / split / name), img)
            images.append({"id": image_id, "file_name": name, "width": SIZE, "height": SIZE})
            for x, y, side, cat in taken:
                anns.append({"id": ann_id, "image_id": image_id, "category_id": cat,
                             "bbox": [x, y, side, side], "area": side * side, "iscrowd": 0})
                ann_id += 1
            image_id += 1
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(
            {"images": images, "annotations": anns, "categories": CATEGORIES}))


# ---------------------------------------------------------------- running the block


class Session:
    """The README's block run in a work directory, as a user at its root would: state, what
    each command printed, the run ids it printed."""

    def __init__(self, work: Path):
        self.work, self.data = work, work / "data" / "shapes"
        self.ports = {"api": free_port(), "dashboard": free_port(), "mlflow": free_port()}
        self.mlflow_url = f"http://127.0.0.1:{self.ports['mlflow']}"
        self.env = dict(os.environ, BCKD_URL=f"http://127.0.0.1:{self.ports['api']}",
                        BCKD_DATA_ROOTS=json.dumps([str(work / "data")]),
                        BCKD_RECONCILE_INTERVAL_S="0.5")
        for name in ("BCKD_TOKEN", "MLFLOW_TRACKING_URI", "RAY_ADDRESS"):
            self.env.pop(name, None)
        self.values: dict[str, str] = {}  # placeholder -> value
        self.printed: dict[str, str] = {}  # command kind -> stdout
        self.serve = None

    def line(self, line: str) -> str:
        """The README's line as this test runs it (see the module docstring)."""
        for placeholder, value in self.values.items():
            line = line.replace(placeholder, value)
        extra = next((v for k, v in EXTRA.items() if kind_of(line).startswith(k)), [])
        line = (line.replace(".venv/bin/bckd", f"{sys.executable} -m cli", 1)
                .replace("data/shapes", str(self.data))
                .replace("http://127.0.0.1:5000", self.mlflow_url))
        return " ".join([line, *extra])

    def start_serve(self, line: str) -> None:
        from tests.service.test_serve import Serve  # `bckd serve` as a child, read by line

        argv = self.line(line).split()[4:] + [  # after `python -m cli serve`
            "--data-dir", str(self.work / ".bckd"), "--port", str(self.ports["api"]),
            "--dashboard-port", str(self.ports["dashboard"]),
            "--mlflow-port", str(self.ports["mlflow"]), "--num-cpus", "2"]
        self.serve = Serve(argv, self.env)
        self.printed["serve"] = "\n".join(self.serve.until("Ctrl-C stops"))

    def run(self, line: str) -> str:
        kind = kind_of(line)
        if kind == "serve":
            self.start_serve(line)
            return self.printed[kind]
        evaluated = EVAL.fullmatch(line)
        command = evaluated.group(1) if evaluated else line
        r = subprocess.run(["bash", "-c", self.line(command)], cwd=self.work, env=self.env,
                           capture_output=True, text=True, timeout=1500)
        assert r.returncode == 0, (line, r.stdout[-4000:], r.stderr[-4000:])
        self.printed[kind] = r.stdout
        print(f"$ {line}\n{r.stdout}")  # the transcript, shown when the test fails
        if evaluated:  # the shell's eval: its `export K=V` lines hold for the later lines
            for words in map(shlex.split, r.stdout.splitlines()):
                assert words[0] == "export" and "=" in words[1], (line, r.stdout)
                self.env.update([words[1].split("=", 1)])
        if kind in RUN_IDS:
            last = r.stdout.rstrip().splitlines()[-1]
            found = re.match(r"job \S+: SUCCEEDED \(MLflow run ([0-9a-f]{32})\)", last)
            assert found, (line, r.stdout[-4000:])
            self.values[RUN_IDS[kind]] = found.group(1)
        return r.stdout


def check_exported(session: Session, printed: str) -> None:
    """The ONNX student of the distillation run: onnxruntime's detections match torch's on
    images of the set, and its labels are mmdet's for the set (the file's category order)."""
    from mlflow.tracking import MlflowClient
    from mmdet.datasets import CocoDataset

    from bckd.export.onnx import OnnxRaw

    assert "detections after NMS match" in printed, printed
    run_id = session.values["<student run id>"]
    client = MlflowClient(admin_uri(session.mlflow_url, admin_login(session.work / ".bckd")))
    check = json.loads(Path(client.download_artifacts(run_id, "export/check.json",
                                                      str(session.work))).read_text())
    val = json.loads((session.data / "annotations/instances_val.json").read_text())
    names = {Path(im["file_name"]).name for im in val["images"]}
    assert check["detections_match"] and check["detections"]["torch"] > 0, check
    assert check["files"] and set(check["files"]) <= names, check  # the set's own images
    onnx_file = re.search(r"^wrote (\S+\.onnx) ", printed, re.M).group(1)
    spec = OnnxRaw(session.work / onnx_file).spec
    mmdet_set = CocoDataset(data_root=str(session.data), ann_file="annotations/instances_val.json",
                            data_prefix={"img": "val/"}, metainfo={"classes": spec.classes},
                            pipeline=[])
    assert spec.category_ids == mmdet_set.cat_ids == [c["id"] for c in CATEGORIES], spec
    assert spec.classes == [c["name"] for c in CATEGORIES], spec


def check_predicted(session: Session, printed: str) -> None:
    """COCO results on the val images, with the set's own image and category ids."""
    json_path = re.search(r"^wrote \d+ detections of 12 images to (\S+)$", printed, re.M)
    assert json_path, printed
    results = json.loads((session.work / json_path.group(1)).read_text())
    val = json.loads((session.data / "annotations/instances_val.json").read_text())
    assert results and {r["category_id"] for r in results} == {5, 9, 11}
    assert {r["image_id"] for r in results} <= {im["id"] for im in val["images"]}


@pytest.mark.slow
def test_your_own_data_start_to_finish(tmp_path):
    session = Session(tmp_path / "work")
    draw_set(session.data)
    try:
        for line in readme_block():
            printed = session.run(line)
            kind = kind_of(line)
            if kind == "data check":
                assert "3 classes, ok" in printed and "train: 32 images" in printed, printed
            elif kind == "serve":
                assert session.env["BCKD_URL"] in printed, printed
            elif kind == "jobs datasets register":
                # the classes in the file's order, which is mmdet's label order
                assert "square (id 9), disk (id 5), cross (id 11)" in printed, printed
            elif kind == "jobs compare":  # both runs, evaluated on the set (mAP a number)
                for run in ("shapes-teacher", "shapes-bckd"):
                    assert re.search(rf"^{run} .* FINISHED +\d+\.\d ", printed, re.M), printed
            elif kind == "jobs mlflow-login":  # the admin token's owner's, not MLflow's admin
                assert session.env["MLFLOW_TRACKING_USERNAME"] == "admin", printed
            elif kind == "export":
                check_exported(session, printed)
            elif kind == "predict":
                check_predicted(session, printed)
    finally:
        if session.serve is not None:
            session.serve.stop()
    assert set(session.printed) == set(PATH)
