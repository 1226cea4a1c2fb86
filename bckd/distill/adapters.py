"""Channel adapters: trained 1x1 convs that map student features to the teacher's width.

Feature distillation (PKD, CWD) and CrossKD compare or feed student features where the
teacher's have ``C_t`` channels; a student with ``C_s != C_t`` channels needs a learned map
``C_s -> C_t``. The adapters are trained with the student (they are in ``parameters()``, the
optimizer and DDP) but are not part of the student detector: each belongs to its method, and the
methods live under one submodule, :data:`ADAPTERS`, whose keys
:func:`keep_adapters_out_of_checkpoints` removes from every ``state_dict()``: a checkpoint saved
while distilling stays exactly the plain student's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from torch import Tensor, nn

if TYPE_CHECKING:
    from bckd.distill.methods.base import Pair

__all__ = ["ADAPTERS", "adapt_features", "channel_adapter", "feature_adapters",
           "keep_adapters_out_of_checkpoints"]

ADAPTERS = "distill_methods"  # the methods' attribute name, the prefix of their keys


def channel_adapter(in_channels: int, out_channels: int) -> nn.Conv2d:
    """``(B, in_channels, H, W) -> (B, out_channels, H, W)``: a 1x1 conv with bias, as the
    connectors of mmrazor's feature distillers; PyTorch's default initialization."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=1)


def feature_adapters(pair: Pair, method: str) -> nn.ModuleList:
    """One adapter per FPN level from the student's width to the teacher's; empty when they
    are equal. ``ValueError`` naming ``method`` when they differ and the pair's
    ``channel_adapters`` switch is off."""
    have, want = pair.student.in_channels, pair.teacher.in_channels
    if have == want:
        return nn.ModuleList()
    if not pair.channel_adapters:
        raise ValueError(f"{method} compares FPN features of one shape: the student's have "
                         f"{have} channels, the teacher's {want}; set channel_adapters=True to "
                         "map the student's with trained 1x1 convs (kept out of checkpoints)")
    levels = len(pair.student.prior_generator.strides)
    return nn.ModuleList(channel_adapter(have, want) for _ in range(levels))


def adapt_features(adapters: nn.ModuleList, feats: Sequence[Tensor]) -> list[Tensor]:
    """Per level (B, C_s, H_l, W_l) -> (B, C_t, H_l, W_l) through :func:`feature_adapters`'
    convs; as they are when there are none."""
    if len(adapters) == 0:
        return list(feats)
    return [adapt(f) for adapt, f in zip(adapters, feats, strict=True)]


def _drop_adapter_keys(module: nn.Module, state_dict: dict, prefix: str, metadata: dict) -> None:
    # A state_dict post-hook; ``prefix`` is "" for the model itself, "module." under DDP.
    # mmengine's checkpoint writer (``get_state_dict``) runs these hooks too.
    head = f"{prefix}{ADAPTERS}"
    for key in [k for k in state_dict if k.startswith(head + ".")]:
        del state_dict[key]
    meta = getattr(state_dict, "_metadata", None)
    if meta is not None:
        for key in [k for k in meta if k == head or k.startswith(head + ".")]:
            del meta[key]


def _forgive_missing_adapter_keys(module: nn.Module, incompatible_keys) -> None:  # noqa: ANN001
    # A load_state_dict post-hook: a plain student's checkpoint has no adapter keys by design,
    # so strict loading into the distiller does not count them as missing. The keys are
    # relative to the module load_state_dict was called on (a DDP wrapper adds "module.").
    missing = incompatible_keys.missing_keys
    missing[:] = [k for k in missing if f".{ADAPTERS}." not in f".{k}"]


def keep_adapters_out_of_checkpoints(model: nn.Module) -> None:
    """Register the hooks on ``model``, the module that owns the :data:`ADAPTERS` submodule.

    Consequence: resuming a run restarts the adapters from their initialization (the student,
    its optimizer state and the schedule resume as usual).
    """
    model.register_state_dict_post_hook(_drop_adapter_keys)
    model.register_load_state_dict_post_hook(_forgive_missing_adapter_keys)
