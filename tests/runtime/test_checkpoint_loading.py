"""Checkpoints a request names load with the narrowest allow-list that reads weights; only the
job's own checkpoints get mmengine's wider one (``bckd.checkpoint``)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from mmengine.logging.history_buffer import HistoryBuffer

from bckd.checkpoint import load_state_dict, mmengine_safe_globals


def test_weights_and_numpy_meta_load(tmp_path):
    path = tmp_path / "final.pth"
    torch.save({"meta": {"epoch": 3, "classes": ("a", "b"), "score": np.float32(0.5),
                         "hist": np.arange(3)},
                "state_dict": {"module.w": torch.ones(2)}}, path)
    assert torch.equal(load_state_dict(str(path))["w"], torch.ones(2))


def test_a_training_checkpoint_with_mmengine_objects_is_refused(tmp_path):
    # mmengine's message hub pickles HistoryBuffer, whose methods go through getattr
    path = tmp_path / "full.pth"
    torch.save({"state_dict": {"w": torch.ones(1)}, "message_hub": HistoryBuffer([1.0], [1])}, path)
    with pytest.raises(pickle.UnpicklingError, match="HistoryBuffer|getattr"):
        load_state_dict(str(path))
    with mmengine_safe_globals():  # what a resume from the job's own checkpoint uses
        assert torch.load(path, weights_only=True)["state_dict"]["w"].item() == 1.0


class Payload:
    def __reduce__(self):
        return (print, ("pwned",))


def test_a_pickle_that_calls_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "x": Payload()}, path)
    with pytest.raises(pickle.UnpicklingError):
        load_state_dict(str(path))
    assert "pwned" not in capsys.readouterr().out
