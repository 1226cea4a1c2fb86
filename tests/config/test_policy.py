"""The config policy (``bckd.config.policy``) against the real registries of mmdet and mmengine.

Each attack is a config that mmengine would turn into code or into a read or write outside the
caller's roots; each must be refused with the exact key named. The shipped configs must pass.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest

from bckd.config.loader import load_config
from bckd.config.policy import ConfigPolicy, PolicyError, Roots, check_config

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
SHIPPED = sorted(p for p in CONFIGS.rglob("*.py") if "_base_" not in p.parts)


@pytest.fixture()
def roots(tmp_path: Path) -> Roots:
    data = tmp_path / "data" / "set"
    (data / "train").mkdir(parents=True)
    (data / "annotations").mkdir()
    (data / "annotations" / "train.json").write_text("{}")
    (tmp_path / "owner" / "runs" / "r").mkdir(parents=True)
    (tmp_path / "owner" / "w.pth").write_bytes(b"")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "secret.pth").write_bytes(b"")
    return Roots(read=(tmp_path / "data", tmp_path / "owner"),
                 write=tmp_path / "owner" / "runs" / "r", base=tmp_path)


def base_config(tmp_path: Path) -> dict:
    return {
        "model": {"type": "GFL", "backbone": {"type": "ResNet", "depth": 18},
                  "bbox_head": {"type": "GFLHead", "num_classes": 3, "in_channels": 8}},
        "train_dataloader": {"batch_size": 2, "dataset": {
            "type": "CocoDataset", "data_root": "data/set/", "ann_file": "annotations/train.json",
            "data_prefix": {"img": "train/"},
            "pipeline": [{"type": "LoadImageFromFile", "backend_args": None}]}},
        "optim_wrapper": {"optimizer": {"type": "SGD", "lr": 0.01}},
        "custom_hooks": [{"type": "EMAHook"}],
        "default_hooks": {"checkpoint": {"type": "CheckpointHook", "interval": 1,
                                         "save_best": "coco/bbox_mAP"}},
    }


def refuse(cfg: dict, policy: ConfigPolicy, key: str, trusted=None) -> str:
    with pytest.raises(PolicyError) as info:
        check_config(cfg, policy, trusted)
    assert info.value.key == key, info.value
    return info.value.message


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_shipped_config_is_data_to_the_policy(path):
    # Loaded as the job loads it at a terminal: the rule on registered names and strings holds.
    cfg = load_config(path)
    check_config(cfg.to_dict(), ConfigPolicy(configs_dir=CONFIGS),
                 trusted_imports=cfg.get("custom_imports"))


def test_a_clean_request_config_passes(tmp_path, roots):
    check_config(base_config(tmp_path), ConfigPolicy(CONFIGS, roots))


@pytest.mark.parametrize("where", ["model.type", "custom_hooks.0.type",
                                   "train_dataloader.dataset.pipeline.0.type",
                                   "optim_wrapper.optimizer.type"])
@pytest.mark.parametrize("name", ["os.system", "builtins.eval", "eval", "exec", "open",
                                  "subprocess.Popen", "posix.system", "mmdet.os",
                                  "mmengine.utils.import_modules_from_strings", "evil.Thing",
                                  "importlib.import_module", "__import__", "GFL ; rm", "GFL\n",
                                  "mmcv.ops.nms", "ＧＦＬ"])
def test_a_type_that_is_not_a_registered_class_is_refused(tmp_path, roots, where, name):
    cfg = base_config(tmp_path)
    node = cfg
    *parents, leaf = where.split(".")
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    node[leaf] = name
    refuse(cfg, ConfigPolicy(CONFIGS, roots), where)


@pytest.mark.parametrize("value", [["GFL"], {"a": 1}, 3, None])
def test_a_type_that_is_not_a_name_is_refused(tmp_path, roots, value):
    cfg = base_config(tmp_path)
    cfg["model"]["type"] = value
    with pytest.raises(PolicyError) as info:
        check_config(cfg, ConfigPolicy(CONFIGS, roots))
    assert info.value.key.startswith("model.type")


@pytest.mark.parametrize("key,value,where", [
    ("optim_wrapper", {"constructor": "os.system", "optimizer": {"type": "SGD"}},
     "optim_wrapper.constructor"),
    ("runner_type", "subprocess.run", "runner_type"),
    ("train_dataloader", {"collate_fn": {"type": "os.system"}}, "train_dataloader.collate_fn.type"),
    ("model", {"type": "GFL", "_scope_": "os"}, "model._scope_"),
    ("default_scope", "os", "default_scope"),
    ("_base_", ["x.py"], "_base_"),
    ("custom_imports", {"imports": ["os"]}, "custom_imports"),
    ("note", "os.system", "note"),
    ("model", {"type": "GFL", "test_cfg": {"nms": {"type": "__import__('os').system('x')"}}},
     "model.test_cfg.nms.type"),
    ("custom_hooks", [{"type": "RFSearchHook", "config": {}}], "custom_hooks.0.type"),
    ("note", "http://10.0.0.1/x", "note"),
    ("note", "/etc/passwd", "note"),
    ("note", "../../etc", "note"),
])
def test_every_other_way_to_name_code_is_refused(tmp_path, roots, key, value, where):
    cfg = base_config(tmp_path)
    cfg[key] = value
    refuse(cfg, ConfigPolicy(CONFIGS, roots), where)


def test_custom_imports_keep_only_the_shipped_value():
    shipped = {"imports": ["bckd.losses"], "allow_failed_imports": False}
    policy = ConfigPolicy(CONFIGS)
    check_config({"custom_imports": copy.deepcopy(shipped), "model": {"type": "GFL"}}, policy,
                 trusted_imports=shipped)
    refuse({"custom_imports": {"imports": ["bckd.losses", "os"]}, "model": {"type": "GFL"}},
           policy, "custom_imports", trusted=shipped)


@pytest.mark.parametrize("teacher", ["/tmp/evil.py", "../tests/service/configs/toy_teacher.py",
                                     "configs/synth/../../tests/service/configs/toy_teacher.py",
                                     "mmdet::../../evil.py", "mmdet::gfl/no_such_config.py",
                                     "configs/synth/_base_/../../../setup.py"])
def test_a_teacher_config_is_shipped_or_mmdet(tmp_path, teacher):
    cfg = {"model": {"type": "BCKDDetector", "teacher": teacher, "student": {"type": "GFL"}}}
    refuse(cfg, ConfigPolicy(CONFIGS, Roots((tmp_path,), tmp_path, ROOT)), "model.teacher")


def test_shipped_and_mmdet_teachers_pass(tmp_path):
    policy = ConfigPolicy(CONFIGS, Roots((tmp_path,), tmp_path, ROOT))
    for teacher in ("configs/synth/gfl_teacher.py", str(CONFIGS / "synth/gfl_teacher.py"),
                    "mmdet::gfl/gfl_r50_fpn_1x_coco.py"):
        check_config({"model": {"type": "BCKDDetector", "teacher": teacher}}, policy)


@pytest.mark.parametrize("key_path,value", [
    ("train_dataloader.dataset.data_root", "/etc/"),
    ("train_dataloader.dataset.data_root", "data/../other/"),
    ("train_dataloader.dataset.ann_file", "../../other/secret.pth"),
    ("train_dataloader.dataset.ann_file", "/etc/hostname"),
    ("train_dataloader.dataset.data_prefix.img", "/etc/"),
    ("train_dataloader.dataset.data_prefix.img", "../../other/"),
    ("load_from", "other/secret.pth"),
    ("resume", "/etc/hostname"),
    ("model.backbone.init_cfg", {"type": "Pretrained", "checkpoint": "other/secret.pth"}),
    ("model.backbone.init_cfg", {"type": "Pretrained", "checkpoint": "http://10.1.2.3/x.pth"}),
    ("model.teacher_ckpt", "other/secret.pth"),
    ("work_dir", "owner/"),
    ("val_evaluator", {"type": "CocoMetric", "outfile_prefix": "data/set/x"}),
    ("custom_hooks", [{"type": "ProfilerHook", "json_trace_path": "owner/trace.json"}]),
    ("train_dataloader.dataset.pipeline.0.backend_args", {"backend": "http"}),
])
def test_paths_outside_the_roots_are_refused_with_their_key(tmp_path, roots, key_path, value):
    cfg = base_config(tmp_path)
    node = cfg
    *parents, leaf = key_path.split(".")
    for part in parents:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    node[leaf] = value
    with pytest.raises(PolicyError) as info:
        check_config(cfg, ConfigPolicy(CONFIGS, roots))
    assert info.value.key.startswith(key_path), info.value


def test_a_symlink_out_of_the_roots_is_refused(tmp_path, roots):
    os.symlink(tmp_path / "other", tmp_path / "data" / "link")
    cfg = base_config(tmp_path)
    cfg["load_from"] = "data/link/secret.pth"
    assert "outside your data roots" in refuse(cfg, ConfigPolicy(CONFIGS, roots), "load_from")


def test_reads_must_exist_and_writes_go_to_the_run_dir(tmp_path, roots):
    policy = ConfigPolicy(CONFIGS, roots)
    cfg = base_config(tmp_path)
    cfg["load_from"] = "owner/missing.pth"
    assert "does not exist" in refuse(cfg, policy, "load_from")
    cfg["load_from"] = "owner/w.pth"
    cfg["val_evaluator"] = {"type": "CocoMetric", "outfile_prefix": "owner/runs/r/eval/coco"}
    check_config(cfg, policy)


def test_load_config_holds_an_uploaded_json_config_to_the_policy(tmp_path, roots):
    upload = tmp_path / "owner" / "upload.json"
    cfg = base_config(tmp_path)
    upload.write_text(json.dumps(cfg))
    policy = ConfigPolicy(CONFIGS, roots)
    assert load_config(upload, {"optim_wrapper.optimizer.lr": 0.1}, policy).optim_wrapper[
        "optimizer"]["lr"] == 0.1
    with pytest.raises(PolicyError) as info:
        load_config(upload, {"custom_hooks.0.type": "os.system"}, policy)
    assert info.value.key == "custom_hooks.0.type"
    # a .py outside the shipped configs is never executed for a request
    evil = tmp_path / "owner" / "evil.py"
    marker = tmp_path / "ran"
    evil.write_text(f"import pathlib; pathlib.Path({str(marker)!r}).touch()\nmodel = {{}}\n")
    with pytest.raises(PolicyError) as info:
        load_config(evil, None, policy)
    assert info.value.key == "config" and not marker.exists()


def test_an_alias_bomb_and_deep_nesting_are_refused_before_they_expand():
    from bckd.config.loader import parse_config_data

    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)) + "model: {type: GFL}\n"
    with pytest.raises(PolicyError, match="more than"):
        parse_config_data(bomb, "yaml")
    with pytest.raises(PolicyError, match="deeper"):
        parse_config_data('{"model": {}, "x": ' + "[" * 40 + "]" * 40 + "}", "json")


# --- the allow-list: keys, declared string arguments, bounds -----------------------------------

@pytest.mark.parametrize("key", ["a'b", 'a"b', "a\nb", "ｅval", "é", "class", "1a", "a b", "a.b",
                                 "", "a-b", "x" * 101, "filename", "pretty_text"])
def test_a_key_that_is_not_an_identifier_is_refused_anywhere(tmp_path, roots, key):
    cfg = base_config(tmp_path)
    cfg["model"]["backbone"][key] = 1
    message = refuse(cfg, ConfigPolicy(CONFIGS, roots), f"model.backbone.{key}")
    assert repr(key) in message
    refuse({**base_config(tmp_path), key: 1}, ConfigPolicy(CONFIGS, roots), key)


@pytest.mark.parametrize("options,key", [
    ({"+zz": [{"a': __import__('os').system('id'), 'b": 1}]},
     "zz.0.a': __import__('os').system('id'), 'b"),
    ({"+a'b": 1}, "a'b"),
    ({"model.backbone.dep\nth": 1}, "model.backbone.dep\nth"),
    ({"+model.ｂ": 1}, "model.ｂ"),
])
def test_an_override_key_that_is_not_an_identifier_is_refused(options, key):
    from mmengine.config import Config

    from bckd.config.overrides import apply_overrides

    cfg = Config({"model": {"type": "GFL", "backbone": {"type": "ResNet", "depth": 18}}})
    with pytest.raises(PolicyError) as info:
        apply_overrides(cfg, options, ConfigPolicy(CONFIGS), trusted=False)
    assert info.value.key == key, info.value


def test_an_override_key_may_index_lists_and_add_keys():
    from mmengine.config import Config

    from bckd.config.overrides import apply_overrides

    cfg = Config({"model": {"type": "GFL"}, "custom_hooks": [{"type": "EMAHook", "momentum": 1}]})
    apply_overrides(cfg, {"custom_hooks.0.momentum": 0.1, "+model.neck": {"type": "FPN"}},
                    ConfigPolicy(CONFIGS), trusted=False)
    assert cfg.custom_hooks[0]["momentum"] == 0.1 and cfg.model.neck.type == "FPN"


@pytest.mark.parametrize("where,value,owner", [
    ("model", {"type": "KnowledgeDistillationSingleStageDetector", "teacher_config": "t.py",
               "backbone": {"type": "ResNet", "depth": 18}},
     "KnowledgeDistillationSingleStageDetector"),
    ("model.backbone.init_cfg", {"type": "Pretrained", "checkpoint": "owner/w.pth",
                                 "map_location": "cpu", "revise_keys": "x"}, "Pretrained"),
    ("default_hooks.checkpoint.filename_tmpl", "{0.__class__}", "CheckpointHook"),
    ("train_dataloader.dataset.seg_map_suffix", "../x", "CocoDataset"),
    ("train_dataloader.dataset.proposal_file", "annotations/train.json", "CocoDataset"),
    ("train_dataloader.dataset.data_prefix.ann", "annotations",
     "train_dataloader.dataset.data_prefix"),
    ("log_processor", {"type": "LogProcessor", "mean_pattern": "(a+)+$"}, "LogProcessor"),
    ("mlflow_tracking_uri", "http://10.0.0.1/", "the config"),
    ("visualizer", {"type": "DetLocalVisualizer", "vis_backends": [
        {"type": "LocalVisBackend", "save_dir": "owner/runs/r/vis",
         "config_save_file": "../../../x.py"}]}, "LocalVisBackend"),
])
def test_a_string_at_an_undeclared_argument_is_refused_naming_key_and_class(
        tmp_path, roots, where, value, owner):
    cfg = base_config(tmp_path)
    node = cfg
    *parents, leaf = where.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    with pytest.raises(PolicyError) as info:
        check_config(cfg, ConfigPolicy(CONFIGS, roots))
    key = info.value.key.rsplit(".", 1)[-1]
    assert f"{key!r} is not a declared string argument of {owner}" in info.value.message


@pytest.mark.parametrize("where,value,bound", [
    ("train_cfg", {"type": "EpochBasedTrainLoop", "max_epochs": 10**9}, "1 and 1000"),
    ("train_cfg", {"max_epochs": 0}, "1 and 1000"),
    ("train_dataloader.batch_size", 100_000, "1 and 256"),
    ("train_dataloader.num_workers", 512, "0 and 32"),
    ("train_dataloader.dataset", {"type": "RepeatDataset", "times": 10**6, "dataset": {}},
     "1 and 1000"),
    ("train_dataloader.dataset.pipeline", [{"type": "Resize", "scale": (100_000, 800)}],
     "1 and 4096"),
    ("default_hooks.checkpoint.max_keep_ckpts", 10**6, "-1 and 100"),
    ("model.backbone.depth", float("nan"), "18 and 152"),
])
def test_a_number_out_of_its_declared_bounds_is_refused(tmp_path, roots, where, value, bound):
    cfg = base_config(tmp_path)
    node = cfg
    *parents, leaf = where.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    with pytest.raises(PolicyError) as info:
        check_config(cfg, ConfigPolicy(CONFIGS, roots))
    assert info.value.key.startswith(where) and bound in info.value.message, info.value


@pytest.mark.parametrize("teacher", [
    "mmdet::/etc/passwd.py", "mmdet::../../../x.py", "mmdet::gfl/../../../setup.py",
    "mmdet::gfl\\gfl_r50_fpn_1x_coco.py", "mmdet::gfl/gfl_r50_fpn_1x_coco.py\0",
    "mmdet::gfl/README.md", "mmdet::gfl", "mmdet::", "mmdet::~/x.py", "mmdet::mmdet::gfl/x.py",
    "mmdet::_base_/../../../../../etc/hostname", "http://x/y.py", "~/evil.py",
])
def test_an_mmdet_name_resolves_only_inside_mmdets_configs(tmp_path, teacher):
    cfg = {"model": {"type": "BCKDDetector", "teacher": teacher, "student": {"type": "GFL"}}}
    refuse(cfg, ConfigPolicy(CONFIGS, Roots((tmp_path,), tmp_path, ROOT)), "model.teacher")
    refuse(cfg, ConfigPolicy(None), "model.teacher")  # at a terminal too, for mmdet:: names


def test_the_teacher_reader_resolves_through_the_same_function(tmp_path):
    from bckd.config.paths import PathError, config_file, mmdet_configs_dir
    from bckd.distill import teacher_model_config

    name = "mmdet::gfl/gfl_r50_fpn_1x_coco.py"
    assert config_file(name, None, tmp_path) == \
        (mmdet_configs_dir() / "gfl/gfl_r50_fpn_1x_coco.py").resolve()
    assert teacher_model_config(name)["type"] == "GFL"
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.py"
    evil.write_text(f"import pathlib; pathlib.Path({str(marker)!r}).touch()\nmodel = {{}}\n")
    for bad in (f"mmdet::{evil}", f"mmdet::{os.path.relpath(evil, mmdet_configs_dir())}"):
        with pytest.raises(PathError):
            teacher_model_config(bad)
    with pytest.raises(PathError):  # with a configs dir (the API), a file outside it
        teacher_model_config(str(evil), CONFIGS, ROOT)
    assert not marker.exists()


@pytest.mark.parametrize("where,value", [
    ("load_from", "owner/evil.py"),
    ("model.backbone.init_cfg", {"type": "Pretrained", "checkpoint": "owner/evil.py"}),
    ("model.backbone.init_cfg", {"type": "Pretrained", "checkpoint": "~/w.pth"}),
    ("load_from", "owner/dir.pth"),  # a directory named like a file
])
def test_a_checkpoint_is_a_torch_file(tmp_path, roots, where, value):
    (tmp_path / "owner" / "evil.py").write_text("model = {}\n")
    (tmp_path / "owner" / "dir.pth").mkdir()
    cfg = base_config(tmp_path)
    node = cfg
    *parents, leaf = where.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    with pytest.raises(PolicyError) as info:
        check_config(cfg, ConfigPolicy(CONFIGS, roots))
    assert info.value.key.startswith(where), info.value


def test_a_directory_named_like_a_file_is_refused_where_a_file_is_read(tmp_path, roots):
    (tmp_path / "owner" / "runs" / "r" / "fake.json").mkdir()
    cfg = base_config(tmp_path)
    cfg["val_evaluator"] = {"type": "CocoMetric", "ann_file": "owner/runs/r/fake.json"}
    assert "is not a file" in refuse(cfg, ConfigPolicy(CONFIGS, roots), "val_evaluator.ann_file")


def test_paths_resolve_as_their_readers_do(tmp_path, roots):
    """A dataset joins ann_file and data_prefix onto its own data_root (relative or not); an
    evaluator opens its ann_file as given, from the job's working directory."""
    policy = ConfigPolicy(CONFIGS, roots)
    cfg = base_config(tmp_path)
    cfg["data_root"] = "owner/"  # the config's own variable: read by no dataset
    cfg["val_evaluator"] = {"type": "CocoMetric", "ann_file": "data/set/annotations/train.json"}
    checked = check_config(cfg, policy)
    ann = (tmp_path / "data/set/annotations/train.json").resolve()
    assert checked["train_dataloader.dataset.ann_file"] == ann
    assert checked["train_dataloader.dataset.data_prefix.img"] == \
        (tmp_path / "data/set/train").resolve()
    assert checked["val_evaluator.ann_file"] == ann
    # relative to data_root for the dataset, to the working directory for the evaluator
    cfg["val_evaluator"]["ann_file"] = "annotations/train.json"
    assert "outside your data roots" in refuse(cfg, policy, "val_evaluator.ann_file")
    cfg["val_evaluator"]["ann_file"] = "data/set/../../other/x.json"
    assert "outside your data roots" in refuse(cfg, policy, "val_evaluator.ann_file")
    cfg = base_config(tmp_path)
    cfg["train_dataloader"]["dataset"]["ann_file"] = "../set/../../other/x.json"
    refuse(cfg, policy, "train_dataloader.dataset.ann_file")


def test_the_declared_teacher_precisions_are_the_distillers():
    from bckd.config.allowed import CLASSES
    from bckd.distill.precision import PRECISIONS

    assert CLASSES["BCKDDetector"]["teacher_precision"].values == tuple(PRECISIONS)


@pytest.mark.parametrize("data_root", ["foo://x/", "http://10.0.0.1/", "data/\0set/", 3])
def test_a_dataset_whose_data_root_is_no_local_path_is_refused(tmp_path, roots, data_root):
    dataset = {"type": "CocoDataset", "ann_file": "annotations/train.json",
               "data_root": data_root}
    refuse({"train_dataloader": {"dataset": dataset}}, ConfigPolicy(CONFIGS, roots),
           "train_dataloader.dataset.data_root")
