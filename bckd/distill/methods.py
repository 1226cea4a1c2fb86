"""Which method a distillation config trains, named as in the papers' tables (``plain``, ``kd``,
``ld``, ``bcdl``, ``ildl``, ``bckd``, ``crosskd``, ``pkd`` and their combinations)."""

from __future__ import annotations

__all__ = ["SLOTS", "TERM_NAMES", "method_name"]

# The distillation slots of a BCKDDetector config, in the order method names list them.
SLOTS = ("loss_distill_cls", "loss_distill_loc", "loss_distill_ld",
          "loss_distill_crosskd_cls", "loss_distill_crosskd_box", "loss_distill_feat")

# (slot, loss type) -> the method's name in the papers' tables.
TERM_NAMES = {
    ("loss_distill_cls", "BinaryClassificationDistillationLoss"): "bcdl",
    ("loss_distill_loc", "IoULocalizationDistillationLoss"): "ildl",
    ("loss_distill_cls", "KnowledgeDistillationKLDivLoss"): "kd",
    ("loss_distill_ld", "KnowledgeDistillationKLDivLoss"): "ld",
    ("loss_distill_crosskd_cls", "BinaryClassificationDistillationLoss"): "crosskd",
    ("loss_distill_crosskd_box", "KnowledgeDistillationKLDivLoss"): "crosskd",
    ("loss_distill_crosskd_box", "GIoULoss"): "crosskd",
    ("loss_distill_feat", "PKDLoss"): "pkd",
}


def method_name(model: dict) -> str:
    """A model config's method: ``plain``, ``kd``, ``ld``, ``bcdl``, ``ildl``, ``bckd``,
    ``crosskd`` or ``pkd``; combinations joined by ``+`` (``bckd+pkd``), unknown terms named by
    their loss type."""
    if model.get("type") != "BCKDDetector":
        return "plain"
    names: list[str] = []
    for slot in SLOTS:
        if model.get(slot):
            name = TERM_NAMES.get((slot, model[slot]["type"]), model[slot]["type"])
            if name not in names:  # CrossKD's two slots are one method
                names.append(name)
    if names[:2] == ["bcdl", "ildl"]:
        names[:2] = ["bckd"]
    return "+".join(names)
