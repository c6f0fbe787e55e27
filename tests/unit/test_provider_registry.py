"""Provider types are found through entry points; instances are built from settings."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from typing import Any

import pytest

from providers.base import Provider, ProviderConfigError, ProviderFactory
from providers.local import LocalProvider
from providers.registry import build_instances, load_provider_types
from providers.sim import SimProvider

# Touches no database: runs in the SQLite pass only (tests/conftest.py).
pytestmark = pytest.mark.backend_independent


def test_the_shipped_types_are_found_through_entry_points() -> None:
    types = load_provider_types()
    assert types["sim"] is SimProvider
    assert types["local"] is LocalProvider


def test_instances_are_built_by_name_from_their_type_and_config() -> None:
    built = build_instances(
        {"upcloud": {"type": "sim", "latency": 0.01, "seed": 3}, "local": {"type": "local"}}
    )
    assert set(built) == {"upcloud", "local"}
    upcloud = built["upcloud"]
    assert isinstance(upcloud, SimProvider)
    assert (upcloud.name, upcloud.latency, upcloud.seed) == ("upcloud", 0.01, 3)
    assert isinstance(built["local"], LocalProvider)
    assert all(isinstance(p, Provider) for p in built.values())


def test_an_unknown_type_is_refused_listing_the_known_types() -> None:
    with pytest.raises(ProviderConfigError) as caught:
        build_instances({"aws": {"type": "aws"}})
    message = str(caught.value)
    assert "'aws'" in message
    # The shipped types, and those other distributions installed (tests/plugins).
    assert f"known types: {', '.join(load_provider_types())}" in message
    assert "local" in load_provider_types() and "sim" in load_provider_types()


def test_a_missing_type_is_refused() -> None:
    with pytest.raises(ProviderConfigError, match="missing `type`"):
        build_instances({"upcloud": {"latency": 1}})


def test_invalid_instance_config_names_the_instance() -> None:
    with pytest.raises(ProviderConfigError, match=r"'upcloud' \(sim\): failure_rate"):
        build_instances({"upcloud": {"type": "sim", "failure_rate": 2}})


def test_types_can_be_given_explicitly() -> None:
    seen: list[tuple[str, Mapping[str, Any]]] = []

    def factory(name: str, config: Mapping[str, Any]) -> Provider:
        seen.append((name, dict(config)))
        return SimProvider(name, config)

    types: dict[str, ProviderFactory] = {"fake": factory}
    built = build_instances({"one": {"type": "fake", "seed": 1}}, types)
    assert isinstance(built["one"], SimProvider)
    assert seen == [("one", {"seed": 1})]  # `type` is not part of the config
    with pytest.raises(ProviderConfigError, match="known types: fake"):
        build_instances({"two": {"type": "sim"}}, types)


def test_a_factory_that_makes_no_provider_is_refused() -> None:
    def broken(name: str, config: Mapping[str, Any]) -> Any:
        return object()

    with pytest.raises(ProviderConfigError, match="did not make a provider"):
        build_instances({"x": {"type": "broken"}}, {"broken": broken})


def test_only_the_types_of_configured_instances_are_imported():
    # A fresh interpreter: what this one imported already says nothing.
    script = (
        "import sys\n"
        "from providers.registry import build_instances\n"
        "build_instances({'a': {'type': 'sim'}, 'b': {'type': 'local'}})\n"
        "print(sorted(m for m in ('providers.host', 'providers.containers', 'pyroute2',"
        " 'aiodocker') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
