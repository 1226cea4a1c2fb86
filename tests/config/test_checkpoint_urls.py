"""Checkpoint URLs: fetched once into torch.hub's cache with the zoo's hash suffix checked, read
weights-only, and a clear error offline.

The model zoo cannot be reached here, so a loopback HTTP server (http.server on 127.0.0.1)
stands in for https://download.openmmlab.com/, serving a real mmdet model's weights saved with
mmengine; the policy allows its prefix only through the explicit ``url_prefixes`` setting.
"""

from __future__ import annotations

import functools
import hashlib
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.runner.checkpoint import CheckpointLoader, save_checkpoint

from bckd.checkpoint import cache_path, load_checkpoint
from bckd.config.policy import ConfigPolicy, PolicyError, Roots, check_config
from bckd.distill import build_teacher

ROOT = Path(__file__).resolve().parents[2]
TEACHER = ROOT / "configs/synth/gfl_teacher.py"


class Zoo:
    """A loopback file server in a thread; ``stop()`` takes it down (a later fetch fails)."""

    def __init__(self, folder: Path) -> None:
        handler = functools.partial(_QuietHandler, directory=str(folder))
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # no request lines in the test output
        pass


@pytest.fixture(scope="module")
def teacher_model():
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    register_all_modules()
    return MODELS.build(Config.fromfile(str(TEACHER)).model)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, teacher_model):
    """The zoo's folder: the weights under their true hash suffix and under a wrong one."""
    folder = tmp_path_factory.mktemp("zoo")
    plain = folder / "plain.pth"
    save_checkpoint({"state_dict": teacher_model.state_dict(),
                     "meta": {"dataset_meta": {"classes": ["a", "b"]}}}, str(plain))
    digest = hashlib.sha256(plain.read_bytes()).hexdigest()
    good = f"gfl_teacher_20240101-{digest[:8]}.pth"
    shutil.copy(plain, folder / good)
    shutil.copy(plain, folder / "gfl_teacher_20240101-deadbeef.pth")
    server = Zoo(folder)
    server.good, server.bad = server.url + good, server.url + "gfl_teacher_20240101-deadbeef.pth"
    yield server
    server.stop()


@pytest.fixture()
def torch_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


def test_a_zoo_url_is_fetched_once_checked_and_loads_into_the_model(zoo, torch_home,
                                                                    teacher_model):
    cached = cache_path(zoo.good)
    assert cached == torch_home / "hub" / "checkpoints" / zoo.good.rsplit("/", 1)[1]
    assert not cached.exists()
    teacher = build_teacher(str(TEACHER), zoo.good)  # bckd.checkpoint.load_state_dict
    assert cached.is_file()
    for key, value in teacher_model.state_dict().items():
        assert torch.equal(teacher.state_dict()[key], value), key
    assert load_checkpoint(zoo.good)["meta"]["dataset_meta"]["classes"] == ["a", "b"]


def test_a_wrong_hash_suffix_is_refused_and_nothing_is_cached(zoo, torch_home):
    with pytest.raises(ValueError, match="does not match the hash in its file name") as err:
        load_checkpoint(zoo.bad)
    assert zoo.bad in str(err.value)
    assert not cache_path(zoo.bad).exists()
    assert list(cache_path(zoo.bad).parent.iterdir()) == []  # no partial file left either
    # mmengine's loader (load_from, init_cfg.checkpoint) now goes through the same check
    with pytest.raises(ValueError, match="does not match the hash"):
        CheckpointLoader.load_checkpoint(zoo.bad, map_location="cpu")


def test_the_cache_serves_when_the_server_is_down_and_an_empty_cache_says_so(
        tmp_path_factory, teacher_model, tmp_path, monkeypatch):
    folder = tmp_path_factory.mktemp("zoo2")
    save_checkpoint(teacher_model.state_dict(), str(folder / "w.pth"))
    digest = hashlib.sha256((folder / "w.pth").read_bytes()).hexdigest()[:8]
    (folder / "w.pth").rename(folder / f"w_20240101-{digest}.pth")
    server = Zoo(folder)
    url = f"{server.url}w_20240101-{digest}.pth"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "warm"))
    first = CheckpointLoader.load_checkpoint(url, map_location="cpu")  # mmengine's path
    server.stop()
    again = load_checkpoint(url)  # the server is gone: the cache answers
    assert set(again) == set(first) == set(teacher_model.state_dict())  # a bare state dict
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "cold"))
    with pytest.raises(FileNotFoundError) as err:
        load_checkpoint(url)
    assert url in str(err.value) and str(cache_path(url)) in str(err.value)
    assert "cold" in str(cache_path(url))


def _config(tmp_path: Path, key: str, value: str) -> dict:
    model = {"type": "GFL", "backbone": {"type": "ResNet", "depth": 18,
                                         "init_cfg": {"type": "Pretrained"}}}
    cfg = {"model": model}
    if key == "load_from":
        cfg["load_from"] = value
    else:
        model["backbone"]["init_cfg"]["checkpoint"] = value
    return cfg


@pytest.mark.parametrize("key", ["load_from", "model.backbone.init_cfg.checkpoint"])
def test_the_policy_allows_the_zoo_and_a_loopback_prefix_only_when_set(tmp_path, zoo, key):
    roots = Roots(read=(tmp_path,), write=tmp_path / "run", base=tmp_path)
    default = ConfigPolicy(configs_dir=None, roots=roots)
    check_config(_config(tmp_path, key, "https://download.openmmlab.com/mmdetection/v3.0/"
                         "gfl/gfl_r50_fpn_1x_coco/gfl_r50_fpn_1x_coco_20200629_121244-25944287"
                         ".pth"), default)
    for url in (zoo.good, "https://example.com/w.pth", "https://download.openmmlab.com/../x"):
        with pytest.raises(PolicyError) as err:
            check_config(_config(tmp_path, key, url), default)
        assert err.value.key == key and "download.openmmlab.com" in err.value.message
    loopback = ConfigPolicy(configs_dir=None, roots=roots, url_prefixes=(zoo.url,))
    check_config(_config(tmp_path, key, zoo.good), loopback)
    with pytest.raises(PolicyError):  # the prefix is one server, not every URL
        check_config(_config(tmp_path, key, "http://127.0.0.2/w.pth"), loopback)


def test_a_teacher_checkpoint_may_be_a_zoo_url_but_no_other_key_may(tmp_path, zoo):
    roots = Roots(read=(tmp_path,), write=tmp_path / "run", base=tmp_path)
    policy = ConfigPolicy(configs_dir=None, roots=roots, url_prefixes=(zoo.url,))
    model = {"type": "BCKDDetector", "teacher": {"type": "GFL"}, "student": {"type": "GFL"},
             "teacher_ckpt": zoo.good}
    check_config({"model": model}, policy)
    with pytest.raises(PolicyError) as err:
        check_config({"model": model, "work_dir": zoo.good}, policy)
    assert err.value.key == "work_dir"
