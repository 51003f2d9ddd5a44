"""Find the passes: every sub-package of `passes` with a `config.py` is a pass named after its folder.

`configs()` imports only the config modules (pydantic), so the API can build the job spec from them; the
worker gets a pass's work with `run_for(config)`, which imports the `run.py` beside the config's module. A
pass's `config.py` exports `Config`: its config class, or an annotated union of method variants
discriminated on `method`. A pass with methods may also keep a method in a folder of its own inside the
pass's folder (`passes/quantize/fp8/`: a `config.py` whose `Config` holds variants of that pass's type, and
a `run.py`); the registry adds its variants to the pass's union, and its run does the work of those only.
"""

import importlib
import importlib.util
import pkgutil
from collections.abc import Callable
from functools import cache
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any, Union, get_args, get_origin

from pydantic import Discriminator, Field, Tag

import passes
from passes.base import PassConfig


class RegistryError(RuntimeError):
    """A pass folder that breaks the rules: a programming error, found when the registry loads."""


def _folders() -> list[str]:
    return sorted(info.name for info in pkgutil.iter_modules(passes.__path__) if info.ispkg)


def method_folders(name: str) -> list[str]:
    """The method folders inside pass `name`'s folder: sub-packages with a `config.py`."""
    package = importlib.import_module(f"passes.{name}")
    return sorted(
        info.name
        for info in pkgutil.iter_modules(package.__path__)
        if info.ispkg and importlib.util.find_spec(f"passes.{name}.{info.name}.config") is not None
    )


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


def _load(name: str) -> Any:
    """Pass `name`'s `Config` with the variants of its method folders added, discriminated by `method`."""
    config = _check(name, importlib.import_module(f"passes.{name}.config"))
    extra = [
        cls
        for folder in method_folders(name)
        for cls in variants(_check(name, importlib.import_module(f"passes.{name}.{folder}.config")))
    ]
    if not extra:
        return config
    members = [*variants(config), *extra]
    if any("method" not in cls.model_fields for cls in members):
        raise RegistryError(f"passes/{name}: a pass with method folders must give every variant a `method`")
    return Annotated[Union[tuple(members)], Field(discriminator="method")]  # noqa: UP007 (a runtime tuple)


@cache
def configs() -> dict[str, Any]:
    """Every pass's `Config` by type, in folder order."""
    return {name: _load(name) for name in _folders()}


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
    return _run_in(f"passes.{type_}")


def run_for(config: PassConfig) -> Run:
    """The `run` that does this config's work: the one beside the module that defines its class (a method
    folder's run for its own variants, else the pass's)."""
    return _run_in(type(config).__module__.removesuffix(".config"))


def _run_in(package: str) -> Run:
    module = importlib.import_module(f"{package}.run")
    run: Run | None = getattr(module, "run", None)
    if run is None:
        raise RegistryError(f"{package.replace('.', '/')}/run.py defines no `run(config, handle, ctx)`")
    return run
