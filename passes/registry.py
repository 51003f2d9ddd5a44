"""Find the passes: every sub-package of `passes` with a `config.py` is a pass named after its folder.

`configs()` imports only the config modules (pydantic), so the API can build the job spec from them; the
worker gets a pass's work with `run_of(type)`, which imports its `run.py`. A pass's `config.py` exports
`Config`: its config class, or an annotated union of method variants discriminated on `method`.
"""

import importlib
import importlib.util
import pkgutil
from collections.abc import Callable
from functools import cache
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any, Union, get_args, get_origin

from pydantic import Discriminator, Tag

import passes
from passes.base import PassConfig


class RegistryError(RuntimeError):
    """A pass folder that breaks the rules: a programming error, found when the registry loads."""


def _folders() -> list[str]:
    return sorted(info.name for info in pkgutil.iter_modules(passes.__path__) if info.ispkg)


def variants(config: Any) -> list[type[PassConfig]]:
    """The config classes behind a pass's `Config`: the class itself, or every member of its union."""
    if get_origin(config) is Annotated:
        return variants(get_args(config)[0])
    if isinstance(config, type):
        return [config]
    return [cls for member in get_args(config) for cls in variants(member)]


def _check(name: str, module: ModuleType) -> Any:
    config = getattr(module, "Config", None)
    if config is None:
        raise RegistryError(f"passes/{name}/config.py defines no `Config`")
    for cls in variants(config):
        declared = get_args(cls.model_fields["type"].annotation) if "type" in cls.model_fields else ()
        if not issubclass(cls, PassConfig) or declared != (name,):
            raise RegistryError(
                f"{cls.__qualname__} in passes/{name}/config.py must be a PassConfig with type: Literal[{name!r}]"
            )
    return config


@cache
def configs() -> dict[str, Any]:
    """Every pass's `Config` by type, in folder order."""
    return {name: _check(name, importlib.import_module(f"passes.{name}.config")) for name in _folders()}


def config_union() -> Any:
    """The union of every pass's config, chosen by `type`: what a job spec's `passes` holds. (A callable
    discriminator, because a pass's own union of methods cannot be a target of an OpenAPI mapping.)"""
    found = configs()
    members = tuple(Annotated[config, Tag(name)] for name, config in found.items())
    known = ", ".join(repr(name) for name in found)
    return Annotated[
        Union[members],  # noqa: UP007 (a runtime tuple of types)
        Discriminator(
            _pass_type,
            custom_error_type="unknown_pass",
            custom_error_message=f"`type` must name a pass: one of {known}",
        ),
    ]


def _pass_type(value: Any) -> str | None:
    found = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return found if isinstance(found, str) else None


if TYPE_CHECKING:
    AnyPassConfig = PassConfig
else:
    AnyPassConfig = config_union()
    """The type of one pass config in a spec or a plan (mypy sees the common base)."""


Run = Callable[[Any, Any, Any], Any]
"""run(config, handle, ctx) -> handle: a pass's work on a model (see workers.context)."""


def has_run(type_: str) -> bool:
    return importlib.util.find_spec(f"passes.{type_}.run") is not None


def run_of(type_: str) -> Run:
    """The `run` function of pass `type_` (imports its heavy dependencies)."""
    module = importlib.import_module(f"passes.{type_}.run")
    run: Run | None = getattr(module, "run", None)
    if run is None:
        raise RegistryError(f"passes/{type_}/run.py defines no `run(config, handle, ctx)`")
    return run
