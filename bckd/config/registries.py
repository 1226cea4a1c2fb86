"""What must be registered before a checked config is built (mmdet's scope, this project's
modules, the config's own checked imports)."""

from __future__ import annotations

from mmengine.config import Config
from mmengine.utils import import_modules_from_strings

__all__ = ["init_registries"]


def init_registries(cfg: Config) -> None:
    """Register what a checked config may build, before building it: its own (checked)
    ``custom_imports``, this project's modules (an uploaded config has no imports of its own),
    and mmdet as the default scope."""
    from mmengine.registry import init_default_scope

    import bckd.distill  # noqa: F401  (registers BCKDDetector)
    import bckd.losses  # noqa: F401  (registers the distillation losses)

    if cfg.get("custom_imports"):
        import_modules_from_strings(**cfg.custom_imports)
    init_default_scope(cfg.get("default_scope", "mmdet"))
