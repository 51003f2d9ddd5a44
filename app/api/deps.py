"""Dependencies injected into routes: settings, database session, store, publisher, job watcher and tenant.

The cheap ones are `async def`: FastAPI runs a plain `def` dependency in its thread pool, and each such hop
costs more than the work of handing over an object from app.state. The tenant check makes its database
round trips (the key, the rate bucket) in one hop.
"""

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, TypeVar, cast

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app.db.session import get_sessionmaker
from app.errors import RateLimited
from app.services.job_events import JobWatcher
from app.services.jobs import Publisher
from app.services.keys import authenticate
from app.services.ratelimit import RateLimiter, retry_after
from app.settings import Settings
from app.storage import Store

T = TypeVar("T")


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


CredentialsDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


class Admission:
    """Lets a request in: its API key must be valid (401) and within its rate (429). `first` does that and
    the route's first read in one thread hop, for the hottest route (the job status read). The hop goes to
    a pool of its own (a plain executor costs a third less CPU than anyio's, and a slow upload inspection
    elsewhere cannot hold up admissions)."""

    def __init__(self, session: Session, buckets: RateLimiter, token: str | None, pool: ThreadPoolExecutor) -> None:
        self.session, self.buckets, self.token, self.pool = session, buckets, token, pool

    async def tenant(self) -> str:
        return await self.first(lambda _session, tenant: tenant)

    async def first(self, read: Callable[[Session, str], T]) -> T:
        """`read(session, tenant)` once the caller is admitted, in the same hop as the admission."""
        wait, value = await asyncio.get_running_loop().run_in_executor(self.pool, self._admit_and_read, read)
        if wait:
            raise RateLimited(
                f"this API key made more than {self.buckets.burst} requests in a burst (sustained limit "
                f"{self.buckets.rate:g}/s); retry after the Retry-After seconds",
                headers={"Retry-After": retry_after(wait)},
            )
        return cast(T, value)

    def _admit_and_read(self, read: Callable[[Session, str], T]) -> tuple[float, T | None]:
        caller = authenticate(self.session, self.token)
        wait = self.buckets.take(caller.key_id)
        return wait, None if wait else read(self.session, caller.tenant)


async def admission(request: Request, session: SessionDep, credentials: CredentialsDep) -> Admission:
    token = credentials.credentials if credentials else None
    return Admission(session, request.app.state.rate_limiter, token, request.app.state.admission_pool)


AdmissionDep = Annotated[Admission, Depends(admission)]


async def current_tenant(admit: AdmissionDep) -> str:
    """The caller's tenant, from its API key (401 otherwise); each key is also rate limited here (429)."""
    return await admit.tenant()


StoreDep = Annotated[Store, Depends(get_store)]
PublisherDep = Annotated[Publisher, Depends(get_publisher)]
WatcherDep = Annotated[JobWatcher, Depends(get_watcher)]
TenantDep = Annotated[str, Depends(current_tenant)]
