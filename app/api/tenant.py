"""/v1/tenant: who the caller's key belongs to, its limits, and the secret that signs its webhooks."""

from fastapi import APIRouter

from app.api.deps import SessionDep, SettingsDep, TenantDep
from app.schemas.tenant import TenantOut
from app.services.keys import webhook_secret

router = APIRouter(prefix="/v1/tenant", tags=["tenant"])


@router.get("", response_model=TenantOut)
def read_tenant(session: SessionDep, settings: SettingsDep, tenant: TenantDep) -> TenantOut:
    return TenantOut(
        tenant=tenant,
        webhook_secret=webhook_secret(session, tenant),
        max_active_jobs=settings.max_active_jobs_per_tenant,
        max_upload_bytes=settings.max_upload_bytes,
        rate_limit_per_s=settings.rate_limit_per_s,
        rate_limit_burst=settings.rate_limit_burst,
    )
