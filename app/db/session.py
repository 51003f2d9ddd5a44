"""Engine and session factory. SQLite gets WAL and a busy timeout so the API and workers can share it.

An engine made with `durable=False` commits without waiting for the disk (SQLite's synchronous=NORMAL
under WAL, still safe from corruption; PostgreSQL's synchronous_commit=off): for state that is cheap to
lose in a crash and written on every request, the rate-limit buckets, where an fsync would cost more than
the request."""

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


@lru_cache
def get_engine(url: str, durable: bool = True) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            if not durable:
                cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    # pre_ping replaces connections a database restart killed; connect_timeout turns an unreachable server
    # into a prompt OperationalError (a 503) instead of a hung request.
    connect_args: dict[str, Any] = {"connect_timeout": 5} if url.startswith("postgresql") else {}
    if url.startswith("postgresql") and not durable:
        connect_args["options"] = "-c synchronous_commit=off"
    return create_engine(
        url, pool_pre_ping=True, pool_size=5, max_overflow=10, pool_timeout=10, connect_args=connect_args
    )


@lru_cache
def get_sessionmaker(url: str, durable: bool = True) -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(url, durable), expire_on_commit=False)


@contextmanager
def session_scope(url: str, durable: bool = True) -> Iterator[Session]:
    """A session that commits on success and rolls back on error (for workers and scripts)."""
    session = get_sessionmaker(url, durable)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
