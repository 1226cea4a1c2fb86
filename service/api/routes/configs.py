"""The configs a job may name: the trusted ``.py`` files under ``configs/``."""

from fastapi import APIRouter

from service.api.deps import CurrentUser, SettingsDep
from service.core.schemas import ConfigPublic, ConfigsPublic
from service.core.validation import is_distill_config, list_configs
from service.settings import PROJECT_ROOT

router = APIRouter(prefix="/configs", tags=["configs"])


@router.get("", response_model=ConfigsPublic)
def read_configs(_: CurrentUser, settings: SettingsDep) -> ConfigsPublic:
    data = []
    for name, path in list_configs(settings.configs_dir):
        try:
            shown = str(path.relative_to(PROJECT_ROOT))
        except ValueError:
            shown = str(path)
        data.append(ConfigPublic(name=name, path=shown, distill=is_distill_config(path)))
    return ConfigsPublic(data=data, count=len(data))
