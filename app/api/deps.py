"""Dependencies injected into routes: settings, database session, store, publisher and tenant."""

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.db.session import get_sessionmaker
from app.services.jobs import Publisher
from app.settings import Settings
from app.storage import Store


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session(settings: Annotated[Settings, Depends(get_settings)]) -> Iterator[Session]:
    session = get_sessionmaker(settings.effective_database_url)()
    try:
        yield session
    finally:
        session.close()


def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def get_publisher(request: Request) -> Publisher:
    publisher: Publisher = request.app.state.publish
    return publisher


def current_tenant() -> str:
    """The caller's tenant. Every row carries it; until API keys exist, every caller is `default`."""
    return "default"


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
StoreDep = Annotated[Store, Depends(get_store)]
PublisherDep = Annotated[Publisher, Depends(get_publisher)]
TenantDep = Annotated[str, Depends(current_tenant)]
