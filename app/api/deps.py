"""Dependencies injected into routes: settings, database session, store, publisher and tenant."""

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app.db.session import get_sessionmaker
from app.errors import RateLimited
from app.services.jobs import Publisher
from app.services.keys import authenticate
from app.services.ratelimit import RateLimiter, retry_after
from app.settings import Settings
from app.storage import Store


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_session(settings: Annotated[Settings, Depends(get_settings)]) -> Iterator[Session]:
    session = get_sessionmaker(settings.effective_database_url)()
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]


def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def get_publisher(request: Request) -> Publisher:
    publisher: Publisher = request.app.state.publish
    return publisher


bearer = HTTPBearer(auto_error=False, description="an API key: `Authorization: Bearer sqz_...`")


def current_tenant(
    request: Request, session: SessionDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> str:
    """The caller's tenant, from its API key (401 otherwise); each key is also rate limited here (429)."""
    key = authenticate(session, credentials.credentials if credentials else None)
    buckets: RateLimiter = request.app.state.rate_limiter
    wait = buckets.take(key.id)
    if wait:
        raise RateLimited(
            f"this API key made more than {buckets.burst} requests in a burst (sustained limit "
            f"{buckets.rate:g}/s); retry after the Retry-After seconds",
            headers={"Retry-After": retry_after(wait)},
        )
    return key.tenant


StoreDep = Annotated[Store, Depends(get_store)]
PublisherDep = Annotated[Publisher, Depends(get_publisher)]
TenantDep = Annotated[str, Depends(current_tenant)]
