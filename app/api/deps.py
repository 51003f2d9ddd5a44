"""Dependencies injected into routes: settings, database session, store, publisher, job watcher and tenant.

The cheap ones are `async def`: FastAPI runs a plain `def` dependency in its thread pool, and each such hop
costs more than the work of handing over an object from app.state. The tenant check makes its database
round trips (the key, the rate bucket) in one hop.
"""

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.db.session import get_sessionmaker
from app.errors import RateLimited
from app.services.job_events import JobWatcher
from app.services.jobs import Publisher
from app.services.keys import authenticate
from app.services.ratelimit import RateLimiter, retry_after
from app.settings import Settings
from app.storage import Store


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_session(settings: Annotated[Settings, Depends(get_settings)]) -> AsyncIterator[Session]:
    """A session per request. Making one connects nothing; closing hands its connection (if it took one)
    back to the pool, a local call."""
    session = get_sessionmaker(settings.effective_database_url)()
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]


async def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


async def get_publisher(request: Request) -> Publisher:
    publisher: Publisher = request.app.state.publish
    return publisher


async def get_watcher(request: Request) -> JobWatcher:
    watcher: JobWatcher = request.app.state.job_watcher
    return watcher


bearer = HTTPBearer(auto_error=False, description="an API key: `Authorization: Bearer sqz_...`")


def _admit(session: Session, buckets: RateLimiter, token: str | None) -> tuple[str, float]:
    """(tenant, seconds to wait) of the key behind `token`; raises Unauthorized for a bad key."""
    key = authenticate(session, token)
    return key.tenant, buckets.take(key.id)


async def current_tenant(
    request: Request, session: SessionDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> str:
    """The caller's tenant, from its API key (401 otherwise); each key is also rate limited here (429)."""
    buckets: RateLimiter = request.app.state.rate_limiter
    tenant, wait = await run_in_threadpool(_admit, session, buckets, credentials.credentials if credentials else None)
    if wait:
        raise RateLimited(
            f"this API key made more than {buckets.burst} requests in a burst (sustained limit "
            f"{buckets.rate:g}/s); retry after the Retry-After seconds",
            headers={"Retry-After": retry_after(wait)},
        )
    return tenant


StoreDep = Annotated[Store, Depends(get_store)]
PublisherDep = Annotated[Publisher, Depends(get_publisher)]
WatcherDep = Annotated[JobWatcher, Depends(get_watcher)]
TenantDep = Annotated[str, Depends(current_tenant)]
