"""Where things live in the artifact store, for the keys that more than one module writes or deletes."""


def original_cache_prefix(tenant: str, model_sha256: str) -> str:
    """The folder of a tenant's cached original-model figures for one set of model bytes
    (workers.evaluation.original_cache writes under it; deleting the tenant's last model with those bytes
    deletes it)."""
    return f"cache/original/tenant-{tenant}/{model_sha256}/"  # never a bare "." or ".." segment
