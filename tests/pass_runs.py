"""Run one pass directly, as the pipeline does: a config validated through the spec's union, then the run
the registry finds for its type."""

from typing import Any

from pydantic import TypeAdapter

from passes.base import PassConfig
from passes.registry import AnyPassConfig, run_for

CONFIG: TypeAdapter[PassConfig] = TypeAdapter(AnyPassConfig)


def parse(**fields: Any) -> PassConfig:
    return CONFIG.validate_python(fields)


def apply(config: PassConfig, handle: Any, ctx: Any) -> Any:
    return run_for(config)(config, handle, ctx)


def params(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())
