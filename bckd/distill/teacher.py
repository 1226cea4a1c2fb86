"""The teacher of a distillation run: its model config (inline, a file, or ``mmdet::...``) and
the frozen detector built from it with its checkpoint's weights."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.logging import print_log
from torch import nn

from bckd.checkpoint import load_state_dict
from bckd.config.paths import config_file

__all__ = ["build_teacher", "teacher_model_config"]


def teacher_model_config(teacher: dict | str, configs_dir: Path | None = None,
                         base: Path | None = None) -> dict:
    """The teacher's model config: given inline, or the ``model`` of a config file.

    The file is the one :func:`bckd.config.paths.config_file` resolves, the same function the
    config policy checks a teacher with: ``"mmdet::gfl/..."`` is a config inside the installed
    mmdet's configs (the file mmengine's ``get_config`` reads), any other name a file relative
    to ``base`` (default: the working directory) and, when ``configs_dir`` is given, inside it.
    Raises ``ValueError`` (a :class:`~bckd.config.paths.PathError`) for any other name.
    """
    if not isinstance(teacher, str):
        return copy.deepcopy(teacher)
    return Config.fromfile(str(config_file(teacher, configs_dir, base or Path.cwd()))).model


def build_teacher(teacher: dict | str, checkpoint: str | None) -> nn.Module:
    """Build a detector from a model config (or a config file's ``model``), load its weights and
    freeze it: eval mode, no gradients.

    Raises:
        FileNotFoundError: the config or checkpoint file does not exist.
        ValueError: the checkpoint's weights do not fit the config (keys or shapes named).
    """
    model = MODELS.build(teacher_model_config(teacher))
    if checkpoint is None:
        print_log("teacher_ckpt is None: the teacher keeps its random initialization",
                  logger="current", level=logging.WARNING)
    else:
        state = load_state_dict(checkpoint)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise ValueError(f"teacher_ckpt {checkpoint!r} does not match the teacher config: "
                             f"{err}") from None
    model.requires_grad_(False)
    return model.eval()
