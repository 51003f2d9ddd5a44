"""The caller's tenant as the API shows it."""

from pydantic import BaseModel, Field


class TenantOut(BaseModel):
    tenant: str
    webhook_secret: str = Field(
        description="Standard Webhooks secret (whsec_...) that signs this tenant's "
        "webhooks: verify webhook-signature with it"
    )
    max_active_jobs: int = Field(description="queued plus running jobs allowed at once")
    max_upload_bytes: int
    rate_limit_per_s: float
    rate_limit_burst: int
