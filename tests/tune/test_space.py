"""Search spaces: the default, the file format, each bad entry refused before a trial starts."""

from __future__ import annotations

import json

import pytest
import ray
from jobtools import BCKD_CONFIG  # tests/jobs, on the path from conftest.py
from mmengine.config import Config

from bckd.tune.space import DEFAULT_SPACE, check_space, load_space, parse_space, to_tune
from cli import main as cli_main


@pytest.fixture(scope="module")
def cfg() -> Config:
    return Config.fromfile(BCKD_CONFIG)


def test_default_space_is_the_papers_weights(cfg):
    by_key = {p.key: (p.kind, p.args) for p in DEFAULT_SPACE}
    assert by_key == {"model.loss_distill_cls.loss_weight": ("loguniform", (0.25, 4.0)),
                      "model.loss_distill_loc.loss_weight": ("loguniform", (0.5, 8.0)),
                      "model.loss_distill_cls.beta": ("choice", (0.5, 1.0, 2.0))}
    check_space(DEFAULT_SPACE, cfg)
    domains = to_tune(DEFAULT_SPACE)
    assert 0.25 <= domains["model.loss_distill_cls.loss_weight"].sample() <= 4.0
    assert domains["model.loss_distill_cls.beta"].sample() in (0.5, 1.0, 2.0)


def test_yaml_and_json_files(tmp_path, cfg):
    yaml_file = tmp_path / "space.yaml"
    yaml_file.write_text("optim_wrapper.optimizer.lr: {type: uniform, low: 0.005, high: 0.02}\n"
                         "model.loss_distill_cls.beta: {type: grid, values: [1, 2]}\n")
    params = load_space(yaml_file)
    assert [(p.key, p.kind) for p in params] == [("optim_wrapper.optimizer.lr", "uniform"),
                                                 ("model.loss_distill_cls.beta", "grid")]
    check_space(params, cfg)
    json_file = tmp_path / "space.json"
    json_file.write_text(json.dumps({"train_dataloader.batch_size":
                                     {"type": "randint", "low": 2, "high": 9}}))
    (param,) = load_space(json_file)
    assert param.args == (2, 9) and param.numeric
    check_space((param,), cfg)


@pytest.mark.parametrize(("entry", "message"), [
    ({"type": "lognormal", "low": 1, "high": 2}, "unknown distribution type 'lognormal'"),
    ({"type": "uniform", "low": 2, "high": 1}, "needs low < high"),
    ({"type": "loguniform", "low": 0, "high": 1}, "loguniform needs low > 0"),
    ({"type": "uniform", "low": 0, "hi": 1}, "unknown ['hi'], missing ['high']"),
    ({"type": "choice", "values": []}, "values must be a non-empty list"),
    ({"type": "randint", "low": 1.5, "high": 4}, "randint needs integers"),
    ({"type": "uniform", "low": "a", "high": 1}, "low and high must be finite numbers"),
    (0.5, "expected a mapping"),
    ({"type": "choice", "values": [1, 2], "name": "beta"}, "named by its config key"),
])
def test_bad_entries_name_the_entry(entry, message):
    with pytest.raises(ValueError, match="entry 'model.loss_distill_cls.beta'") as err:
        parse_space({"model.loss_distill_cls.beta": entry})
    assert message in str(err.value)


@pytest.mark.parametrize(("key", "spec", "message"), [
    ("model.loss_distill_cls.weight", {"type": "uniform", "low": 0.1, "high": 1},
     "does not exist in the config"),
    ("model.loss_distill_cls", {"type": "choice", "values": [1, 2]}, "holds a dict"),
    ("model.loss_distill_cls.beta", {"type": "choice", "values": ["a", "b"]},
     "are not all numbers"),
    ("model.loss_distill_loc.iou_mode", {"type": "uniform", "low": 0.1, "high": 1},
     "holds the string 'giou'"),
])
def test_space_checked_against_the_config(cfg, key, spec, message):
    with pytest.raises(ValueError, match=f"search space entry '{key}'") as err:
        check_space(parse_space({key: spec}), cfg)
    assert message in str(err.value)


def test_cli_refuses_a_bad_file_before_any_trial(tmp_path, synth_data, teacher_ckpt, capsys):
    """A key the config lacks: exit 2 naming the entry; no Ray cluster, no sweep dir, no
    MLflow database."""
    space = tmp_path / "bad.yaml"
    space.write_text("model.loss_distill_cls.loss_weight: {type: loguniform, low: 0.25, high: 4}\n"
                     "model.loss_distill_cls.betta: {type: choice, values: [0.5, 1, 2]}\n")
    work = tmp_path / "work" / "sweep"
    was_running = ray.is_initialized()
    code = cli_main(["sweep", BCKD_CONFIG, "--num-samples", "3", "--search-space", str(space),
                     "--work-dir", str(work), "--cfg-options",
                     f"train_dataloader.dataset.data_root={synth_data}/",
                     f"val_dataloader.dataset.data_root={synth_data}/",
                     f"val_evaluator.ann_file={synth_data}/annotations/instances_val.json",
                     f"model.teacher_ckpt={teacher_ckpt}"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "search space entry 'model.loss_distill_cls.betta'" in err
    assert "does not exist in the config" in err
    assert ray.is_initialized() == was_running
    assert not work.exists() and not (tmp_path / "work" / "mlflow.db").exists()


def test_unparsable_file_is_refused(tmp_path):
    space = tmp_path / "bad.yaml"
    space.write_text("model.x: {type: uniform, low: [\n")
    with pytest.raises(ValueError, match="does not parse"):
        load_space(space)
