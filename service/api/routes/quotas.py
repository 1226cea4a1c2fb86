"""Per-owner quotas: admins read and change any owner's, a user reads their own
(``service.core.quotas``; the queue that applies them is ``service.core.queue``)."""

from typing import Annotated

from fastapi import APIRouter, Path

from service.api.deps import CurrentUser, SessionDep, SettingsDep
from service.core import quotas
from service.core.quotas import QuotaPublic, QuotasPublic, QuotaUpdate
from service.core.schemas import NAME_PATTERN

router = APIRouter(prefix="/quotas", tags=["quotas"])

Owner = Annotated[str, Path(pattern=f"^{NAME_PATTERN}$", description="an owner's name")]


@router.get("", response_model=QuotasPublic,
            responses={403: {"description": "not an admin token"}})
def list_quotas(user: CurrentUser, session: SessionDep, settings: SettingsDep) -> QuotasPublic:
    """The defaults (``BCKD_QUOTA_*``) and every owner with a quota of their own."""
    return quotas.list_quotas(session, user, settings)


@router.get("/{owner}", response_model=QuotaPublic,
            responses={403: {"description": "another owner's, with a user token"}})
def read_quota(owner: Owner, user: CurrentUser, session: SessionDep,
               settings: SettingsDep) -> QuotaPublic:
    """The limits in force for ``owner`` and what its jobs hold: running and queued."""
    return quotas.read_quota(session, user, owner, settings)


@router.put("/{owner}", response_model=QuotaPublic,
            responses={403: {"description": "not an admin token"}})
def set_quota(owner: Owner, body: QuotaUpdate, user: CurrentUser, session: SessionDep,
              settings: SettingsDep) -> QuotaPublic:
    """Replace ``owner``'s own quota; a field left out is the default. It bounds the next
    admissions; admitted jobs keep running."""
    return quotas.set_quota(session, user, owner, body, settings)
