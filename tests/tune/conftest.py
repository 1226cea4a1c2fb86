"""Fixtures of the sweep tests: the tiny synthetic data and an initialized GFL teacher checkpoint,
built with the job tests' and distiller tests' own helper modules (tests/jobs/jobtools.py,
tests/distill/distilltools.py), put on the path here so this directory has no copy of them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
for helpers in ("jobs", "distill"):
    if str(TESTS / helpers) not in sys.path:
        sys.path.insert(0, str(TESTS / helpers))

import jobtools  # noqa: E402  (tests/jobs, put on the path above)


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> Path:
    return jobtools.make_synth(tmp_path_factory.mktemp("synth"))


@pytest.fixture(scope="session")
def teacher_ckpt(tmp_path_factory) -> Path:
    """An initialized (untrained) GFL teacher: the sweep checks need a checkpoint that fits the
    teacher config, not a good teacher."""
    import distilltools  # tests/distill, put on the path above
    from mmengine.registry import init_default_scope

    init_default_scope("mmdet")
    return distilltools.save_teacher("gfl", tmp_path_factory.mktemp("teacher"))
