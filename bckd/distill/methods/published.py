"""The keys a ``BCKDDetector`` config published before method lists, read as methods, and the
method name of a model config.

Configs written for the first releases (every config under configs/, checkpoints' run records)
set one slot per term: ``loss_distill_cls=dict(type=...)`` and so on. They keep working: the
slots translate to the method list those configs meant, in the order below, and a config may
also list methods, ``methods=[dict(type='CWD', ...)]``, after its slots. New methods only take
the list; the table here does not grow.
"""

from __future__ import annotations

from collections.abc import Mapping

from bckd.distill.methods.base import METHODS

__all__ = ["PUBLISHED", "SLOTS", "method_configs", "method_name", "published_methods"]

# The published slots, in the order method names list them.
SLOTS = ("loss_distill_cls", "loss_distill_loc", "loss_distill_ld",
         "loss_distill_crosskd_cls", "loss_distill_crosskd_box", "loss_distill_feat")
PUBLISHED = (*SLOTS, "crosskd_depth", "crosskd_align")
KD_LOSS = "KnowledgeDistillationKLDivLoss"  # in loss_distill_cls: KD, else BCDL


def published_methods(keys: Mapping) -> list[dict]:
    """Method configs for the published keys of a ``BCKDDetector`` config.

    ``loss_distill_cls`` with ``loss_distill_loc`` is BCKD (KD when the class term is
    ``KnowledgeDistillationKLDivLoss``, then ILDL apart); alone, BCDL or KD and ILDL;
    ``loss_distill_ld`` LD; the two CrossKD slots with ``crosskd_depth`` and ``crosskd_align``
    one CrossKD; ``loss_distill_feat`` PKD. Raises ``ValueError`` naming a key that is none of
    :data:`PUBLISHED`.
    """
    unknown = sorted(set(keys) - set(PUBLISHED))
    if unknown:
        raise ValueError(f"BCKDDetector has no argument {', '.join(unknown)}: list methods in "
                         f"methods=[...] (types {', '.join(sorted(METHODS))}), or set one of "
                         f"{', '.join(PUBLISHED)}")
    cls, loc = keys.get("loss_distill_cls"), keys.get("loss_distill_loc")
    methods = []
    if cls and loc and cls["type"] != KD_LOSS:
        methods.append(dict(type="BCKD", loss_cls=cls, loss_loc=loc))
    else:
        if cls:
            methods.append(dict(type="KD" if cls["type"] == KD_LOSS else "BCDL", loss=cls))
        if loc:
            methods.append(dict(type="ILDL", loss=loc))
    if keys.get("loss_distill_ld"):
        methods.append(dict(type="LD", loss=keys["loss_distill_ld"]))
    crosskd_cls, crosskd_box = keys.get("loss_distill_crosskd_cls"), keys.get(
        "loss_distill_crosskd_box")
    if crosskd_cls or crosskd_box:
        methods.append(dict(type="CrossKD", loss_cls=crosskd_cls, loss_box=crosskd_box,
                            depth=keys.get("crosskd_depth"),
                            align=keys.get("crosskd_align", True)))
    if keys.get("loss_distill_feat"):
        methods.append(dict(type="PKD", loss=keys["loss_distill_feat"]))
    return methods


def method_configs(model: Mapping) -> list[dict]:
    """A ``BCKDDetector`` model config's methods: its published slots', then its list."""
    keys = {k: v for k, v in model.items() if k in PUBLISHED}
    return [*published_methods(keys), *(model.get("methods") or ())]


def method_name(model: Mapping) -> str:
    """A model config's method: ``plain`` without distillation, else its methods' names joined
    by ``+`` (``bckd+pkd``); a type no method registers is named as written."""
    if model.get("type") != "BCKDDetector":
        return "plain"
    names = []
    for config in method_configs(model):
        kind = config.get("type")
        names.append(METHODS[kind].name if kind in METHODS else str(kind))
    return "+".join(names)
