"""Provider types come from the `provisioning.providers` entry-point group.

A type is a factory (usually the provider class) called with an instance's name and
its configuration; the settings name the instances, each with the `type` it is made
from. Third-party providers register by declaring an entry point in that group.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any, cast

from providers.base import Provider, ProviderConfigError, ProviderFactory

ENTRY_POINT_GROUP = "provisioning.providers"


def provider_type_names() -> list[str]:
    """The installed provider types' names, none of them imported."""
    return sorted(_declared())


def load_provider_types(names: Collection[str] | None = None) -> dict[str, ProviderFactory]:
    """The installed provider types, by name: every one, or those of `names` that are
    installed (a type's module is imported only when asked for: a process imports the
    engine libraries of the types it has instances of, not of every type installed).

    Raises `ProviderConfigError` if an entry point cannot be imported, is not callable,
    or if two different objects claim the same name.
    """
    declared = _declared()
    wanted = sorted(declared if names is None else set(names) & declared.keys())
    return {name: _load(declared[name]) for name in wanted}


def _declared() -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        seen = found.get(ep.name)
        if seen is not None:
            if seen.value == ep.value:
                continue  # the same distribution seen twice on sys.path
            raise ProviderConfigError(
                f"provider type {ep.name!r} is declared twice: {seen.value} and {ep.value}"
            )
        found[ep.name] = ep
    return found


def _load(ep: EntryPoint) -> ProviderFactory:
    try:
        factory = ep.load()
    except Exception as exc:
        raise ProviderConfigError(
            f"provider type {ep.name!r} ({ep.value}) cannot be loaded: {exc}"
        ) from exc
    if not callable(factory):
        raise ProviderConfigError(f"provider type {ep.name!r} ({ep.value}) is not callable")
    return cast(ProviderFactory, factory)


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
    known: Mapping[str, ProviderFactory]
    if types is None:
        wanted = {t.get("type") for t in instances.values() if isinstance(t, Mapping)}
        known = load_provider_types({name for name in wanted if isinstance(name, str)})
        installed = provider_type_names()
    else:
        known, installed = types, sorted(types)
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
                f"(known types: {', '.join(installed) or 'none'})"
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
