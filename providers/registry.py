"""Provider types come from the `provisioning.providers` entry-point group.

A type is a factory (usually the provider class) called with an instance's name and
its configuration; the settings name the instances, each with the `type` it is made
from. Third-party providers register by declaring an entry point in that group.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any, cast

from providers.base import Provider, ProviderConfigError, ProviderFactory

ENTRY_POINT_GROUP = "provisioning.providers"


def load_provider_types() -> dict[str, ProviderFactory]:
    """Every installed provider type, by name.

    Raises `ProviderConfigError` if an entry point cannot be imported, is not callable,
    or if two different objects claim the same name.
    """
    types: dict[str, ProviderFactory] = {}
    origins: dict[str, str] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in origins:
            if origins[ep.name] == ep.value:
                continue  # the same distribution seen twice on sys.path
            raise ProviderConfigError(
                f"provider type {ep.name!r} is declared twice: {origins[ep.name]} and {ep.value}"
            )
        try:
            factory = ep.load()
        except Exception as exc:
            raise ProviderConfigError(
                f"provider type {ep.name!r} ({ep.value}) cannot be loaded: {exc}"
            ) from exc
        if not callable(factory):
            raise ProviderConfigError(f"provider type {ep.name!r} ({ep.value}) is not callable")
        types[ep.name] = cast(ProviderFactory, factory)
        origins[ep.name] = ep.value
    return dict(sorted(types.items()))


def build_instances(
    instances: Mapping[str, Mapping[str, Any]],
    types: Mapping[str, ProviderFactory] | None = None,
) -> dict[str, Provider]:
    """Make one provider per configured instance, by instance name.

    Each instance's table names its `type`; the rest of the table is handed to the
    type's factory. `types` defaults to the installed ones. Any problem (unknown type,
    invalid configuration, a factory that does not return a provider) raises
    `ProviderConfigError` naming the instance.
    """
    known = load_provider_types() if types is None else types
    built: dict[str, Provider] = {}
    for name, table in instances.items():
        if not isinstance(table, Mapping):
            raise ProviderConfigError(f"provider instance {name!r}: expected a table")
        type_name = table.get("type")
        if not isinstance(type_name, str) or not type_name:
            raise ProviderConfigError(f"provider instance {name!r}: missing `type`")
        factory = known.get(type_name)
        if factory is None:
            raise ProviderConfigError(
                f"provider instance {name!r}: unknown type {type_name!r} "
                f"(known types: {', '.join(sorted(known)) or 'none'})"
            )
        config = {key: value for key, value in table.items() if key != "type"}
        try:
            provider = factory(name, config)
        except (ProviderConfigError, ValueError, TypeError) as exc:
            raise ProviderConfigError(f"provider instance {name!r} ({type_name}): {exc}") from exc
        if not isinstance(provider, Provider):
            raise ProviderConfigError(
                f"provider instance {name!r}: type {type_name!r} did not make a provider"
            )
        built[name] = provider
    return built
