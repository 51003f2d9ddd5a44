"""Per-key rate limiting that holds across API processes: a token bucket per API key kept where every
replica sees it. With a Redis broker the bucket lives in Redis and one Lua script refills and takes
atomically (on Redis's clock); otherwise it is a `rate_buckets` row that one conditional UPDATE refills
and takes (a row lock on PostgreSQL, the write lock on SQLite), committed without waiting for the disk."""

import logging
import math
import time
from collections.abc import Callable
from typing import Protocol

from sqlalchemy import Connection, Float, bindparam, case, select, update
from sqlalchemy.dialects import postgresql, sqlite

from app.db.models import RateBucket
from app.db.session import get_engine

log = logging.getLogger(__name__)


class RateLimiter(Protocol):
    rate: float
    burst: int

    def take(self, key: str) -> float:
        """0 if the request may go on, else the seconds to wait before the next one would be allowed."""


def retry_after(wait_s: float) -> str:
    """The Retry-After header value: whole seconds, at least 1."""
    return str(max(1, math.ceil(wait_s)))


# KEYS[1] the bucket; ARGV rate, burst. Returns the wait in seconds as a string (Lua numbers would be
# truncated to integers in the reply).
TAKE_SCRIPT = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'last')
local tokens, last = tonumber(state[1]) or burst, tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - last) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'last', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return tostring(wait)
"""


class RedisBuckets:
    """Buckets in Redis (a hash per key that expires once it would be full again)."""

    def __init__(self, url: str, rate: float, burst: int) -> None:
        import redis

        self.rate, self.burst = rate, burst
        self._client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._take = self._client.register_script(TAKE_SCRIPT)
        self._errors: tuple[type[Exception], ...] = (redis.RedisError,)

    def take(self, key: str) -> float:
        try:
            return float(self._take(keys=[f"squeeze:rate:{key}"], args=[self.rate, self.burst]))
        except self._errors as exc:  # Redis down: jobs still queue in the database, so requests must not 500
            log.warning("rate limiter unavailable, letting the request through: %s", exc)
            return 0.0


class DatabaseBuckets:
    """Buckets as `rate_buckets` rows. The take is one UPDATE whose WHERE is "a token is left after the
    refill", so two processes can never spend the same token; the clock is the API hosts' (keep NTP).
    The statements are built once (building SQLAlchemy expressions costs more than running them) and run
    on a connection of their own engine, whose commits do not wait for the disk."""

    def __init__(self, url: str, rate: float, burst: int, clock: Callable[[], float] = time.time) -> None:
        self.url, self.rate, self.burst, self.clock = url, rate, burst, clock
        now = bindparam("now", type_=Float)
        elapsed = case((RateBucket.updated_at < now, now - RateBucket.updated_at), else_=0.0)
        refilled = RateBucket.tokens + elapsed * rate
        tokens = case((refilled > burst, float(burst)), else_=refilled)
        bucket = RateBucket.key == bindparam("bucket")
        self._take = (
            update(RateBucket)
            .where(bucket, tokens >= 1)
            .values(tokens=tokens - 1, updated_at=case((RateBucket.updated_at < now, now), else_=RateBucket.updated_at))
        )
        self._left = select(tokens).where(bucket)

    def take(self, key: str) -> float:
        now = self.clock()
        params = {"bucket": key, "now": now}
        with get_engine(self.url, durable=False).begin() as conn:
            if conn.execute(self._take, params).rowcount == 1:
                return 0.0
            if self._insert_full_minus_one(conn, key, now):
                return 0.0
            left = conn.scalar(self._left, params)
        return (1 - float(left if left is not None else 0.0)) / self.rate

    def _insert_full_minus_one(self, conn: Connection, key: str, now: float) -> bool:
        """The first request of a key creates its bucket; False if the bucket already existed."""
        insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        row = {"key": key, "tokens": float(self.burst - 1), "updated_at": now}
        result = conn.execute(insert(RateBucket).values(**row).on_conflict_do_nothing(index_elements=["key"]))
        return bool(result.rowcount == 1)


def open_rate_limiter(broker_url: str, database_url: str, rate: float, burst: int) -> RateLimiter:
    """Redis when the broker is Redis (a hot path off the database), else the database every replica shares."""
    if broker_url.startswith(("redis://", "rediss://")):
        return RedisBuckets(broker_url, rate, burst)
    return DatabaseBuckets(database_url, rate, burst)
