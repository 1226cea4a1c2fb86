"""The method registry: a config's published keys and its method list build the same methods,
the teacher does only the work its methods read, and misfit lists are refused by name."""

from __future__ import annotations

import pytest
import torch
from distilltools import batch, build, model_cfg

from bckd.distill import METHODS, method_name
from bckd.distill.methods import READS, published_methods

# Every method of issue 32's list, by config type and name.
NAMES = {"KD": "kd", "LD": "ld", "BCDL": "bcdl", "ILDL": "ildl", "BCKD": "bckd", "PKD": "pkd",
         "CrossKD": "crosskd"}


def _cfg(name: str = "bckd_gfl", **overrides: object):
    cfg = model_cfg(name)
    cfg.teacher_ckpt, cfg.teacher_precision = None, "fp32"
    cfg.update(overrides)
    return cfg


def _losses(cfg) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = build(cfg)
    return model(**batch(model, size=64), mode="loss")


def test_every_method_declares_its_terms_and_reads() -> None:
    assert {kind: METHODS[kind].name for kind in NAMES} == NAMES
    for kind, cls in METHODS.items():
        assert cls.reads and cls.reads <= READS, kind
        assert cls.terms and all(t.startswith("loss_distill_") for t in cls.terms), kind


def test_a_method_list_trains_exactly_as_the_published_keys() -> None:
    published = _cfg()
    listed = _cfg(loss_distill_cls=None, loss_distill_loc=None,
                  methods=published_methods({"loss_distill_cls": published.loss_distill_cls,
                                             "loss_distill_loc": published.loss_distill_loc}))
    assert listed.methods[0]["type"] == "BCKD" and method_name(listed) == "bckd"
    want, have = _losses(published), _losses(listed)
    assert want.keys() == have.keys()
    for key in ("loss_distill_cls", "loss_distill_loc"):
        assert torch.equal(want[key], have[key]), key


def test_a_combination_is_a_list() -> None:
    cfg = _cfg(methods=[dict(type="PKD"), dict(type="LD")], channel_adapters=True)
    assert method_name(cfg) == "bckd+pkd+ld"
    losses = _losses(cfg)
    terms = {k for k in losses if k.startswith("loss_distill")}
    assert terms == {"loss_distill_cls", "loss_distill_loc", "loss_distill_feat",
                     "loss_distill_ld"}
    assert all(torch.isfinite(losses[t]) and losses[t].requires_grad for t in terms)


@pytest.mark.parametrize("name,head_runs", [("pkd_gfl", False), ("bckd_gfl", True)])
def test_the_teacher_runs_only_what_its_methods_read(name: str, head_runs: bool) -> None:
    torch.manual_seed(0)
    model = build(_cfg(name))
    calls = []
    model.teacher.bbox_head.register_forward_hook(lambda *args: calls.append(1))
    model(**batch(model, size=64), mode="loss")
    assert bool(calls) == head_runs


@pytest.mark.parametrize("overrides,message", [
    (dict(methods=[dict(type="BCDL")]), "methods bckd and bcdl both add loss_distill_cls"),
    (dict(methods=[dict(type="PKD"), dict(type="PKD")], channel_adapters=True),
     "PKD is listed twice"),
    (dict(methods=[dict(type="GFL")]), "'GFL' is not a distillation method; the methods are"),
    (dict(loss_distill_typo=dict(type="PKDLoss")), "no argument loss_distill_typo: list methods"),
    (dict(loss_distill_cls=None, loss_distill_loc=None, methods=[dict(type="CrossKD")]),
     "CrossKD needs loss_cls or loss_box"),
])
def test_misfit_lists_are_refused_by_name(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build(_cfg(**overrides))
