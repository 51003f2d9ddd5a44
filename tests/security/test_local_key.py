"""The embedded default's local key: made once, kept 0600 in SQUEEZE_HOME, reused while valid."""

import stat
from pathlib import Path

from app.db.migrate import upgrade_to_head
from app.db.session import session_scope
from app.services.keys import LOCAL_TENANT, authenticate, ensure_local_key, revoke_key


def test_local_key_is_private_stable_and_replaced_when_revoked(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'squeeze.db'}"
    upgrade_to_head(url)
    key_file = tmp_path / "local-api-key"
    with session_scope(url) as session:
        first = ensure_local_key(session, key_file)
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600, "only the owner may read the key file"
        assert ensure_local_key(session, key_file) == first, "a restart keeps the same key"
        assert authenticate(session, first).tenant == LOCAL_TENANT
        revoke_key(session, first.split("_")[1])
        second = ensure_local_key(session, key_file)
    assert second != first and key_file.read_text().strip() == second, "a revoked local key is replaced"
