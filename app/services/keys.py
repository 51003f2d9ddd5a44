"""API keys and tenants: create, revoke, list and check keys; each tenant's webhook signing secret.

A key is `sqz_<prefix>_<secret>`. Only the prefix (to find the row) and the sha256 of the whole token
are stored; the token is shown once, at creation, and checked in constant time.
"""

import base64
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import bindparam, or_, select
from sqlalchemy.orm import Session

from app.db.models import ApiKey, Tenant, new_id, utcnow
from app.errors import NotFound, SqueezeError, Unauthorized

TOKEN_RE = re.compile(r"sqz_([0-9a-f]{12})_[A-Za-z0-9_-]{43}")
TENANT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
LOCAL_TENANT = "local"
_DUMMY_HASH = hashlib.sha256(b"no such key").hexdigest()
_KEY_BY_PREFIX = select(ApiKey.id, ApiKey.tenant, ApiKey.secret_hash, ApiKey.revoked_at).where(
    ApiKey.prefix == bindparam("prefix")
)
"""Built once, and of columns, not an entity: every request runs it."""


UNAUTHORIZED_MESSAGE = (
    "send a valid API key as `Authorization: Bearer sqz_...`; create one with `squeeze keys create --tenant NAME`"
)


@dataclass
class NewKey:
    """A freshly made key: the token (shown once) and its tenant's webhook secret."""

    key: ApiKey
    token: str
    webhook_secret: str


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def ensure_tenant(session: Session, tenant: str) -> Tenant:
    """The tenant's row, made (with a new webhook secret) on first use."""
    row = session.get(Tenant, tenant)
    if row is None:
        secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        row = Tenant(name=tenant, webhook_secret=secret)
        session.add(row)
        session.flush()
    return row


def create_key(session: Session, tenant: str) -> NewKey:
    """A new key for `tenant` (the tenant is created if new). The token is returned once and never stored."""
    if not TENANT_RE.fullmatch(tenant):
        raise SqueezeError(f"tenant {tenant!r} is not valid: use 1 to 64 letters, digits, '.', '_' or '-'")
    prefix = secrets.token_hex(6)
    token = f"sqz_{prefix}_{secrets.token_urlsafe(32)}"
    key = ApiKey(id=new_id("key"), tenant=tenant, prefix=prefix, secret_hash=_hash(token), created_at=utcnow())
    session.add(key)
    secret = ensure_tenant(session, tenant).webhook_secret
    session.commit()
    return NewKey(key, token, secret)


def revoke_key(session: Session, prefix_or_id: str) -> ApiKey:
    key = session.scalar(select(ApiKey).where(or_(ApiKey.prefix == prefix_or_id, ApiKey.id == prefix_or_id)))
    if key is None:
        raise NotFound(f"no API key with prefix or id {prefix_or_id!r}: see `squeeze keys list`")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.commit()
    return key


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.tenant, ApiKey.created_at)))


@dataclass(frozen=True)
class Caller:
    """Who a valid key is: its id (its rate bucket) and its tenant."""

    key_id: str
    tenant: str


def authenticate(session: Session, token: str | None) -> Caller:
    """The live key behind a bearer token. Missing, malformed, unknown and revoked keys all raise the
    same error."""
    match = TOKEN_RE.fullmatch(token or "")
    key = session.execute(_KEY_BY_PREFIX, {"prefix": match.group(1)}).first() if match else None
    expected = key.secret_hash if key is not None else _DUMMY_HASH
    valid = hmac.compare_digest(_hash(token or ""), expected)
    if key is None or not valid or key.revoked_at is not None:
        raise Unauthorized(UNAUTHORIZED_MESSAGE)
    return Caller(key.id, key.tenant)


def webhook_secret(session: Session, tenant: str) -> str:
    secret = ensure_tenant(session, tenant).webhook_secret
    session.commit()
    return secret


def ensure_local_key(session: Session, key_file: Path) -> str:
    """The embedded default's key for tenant `local`: the one kept in `key_file` while it is still valid,
    else a new one written there with mode 0600."""
    if key_file.is_file():
        token = key_file.read_text().strip()
        try:
            if authenticate(session, token).tenant == LOCAL_TENANT:
                return token
        except Unauthorized:
            pass
        key_file.unlink()
    token = create_key(session, LOCAL_TENANT).token
    key_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token
