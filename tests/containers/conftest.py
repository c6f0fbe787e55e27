"""The engine the container tests share: one podman service, registry and image set per
test session process (tests/containers/engine.py). Skipped where the engine's packages
are missing, except under `./dev test`, which installs them: there it is a failure."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.containers.engine import Engine, missing
from tests.servers import OrchestratorProcess


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    absent = missing()
    if absent and not os.environ.get("DEV_TEST"):
        pytest.skip(f"the container tests need {', '.join(absent)} (./dev test installs them)")
    started = Engine().start()
    try:
        yield started
    finally:
        started.stop()
    assert started.firewall_untouched(), "podman changed the host's iptables"


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, engine: Engine
) -> Iterator[OrchestratorProcess]:
    process = OrchestratorProcess(
        tmp_path_factory.mktemp("orchestrator"),
        env={
            "PROVISIONING_PROVIDERS__ENGINE__TYPE": "containers",
            "PROVISIONING_PROVIDERS__ENGINE__SOCKET": str(engine.socket),
            "PROVISIONING_PROVIDERS__ENGINE__STOP_TIMEOUT": "1",
            "PROVISIONING_PROVIDERS__ENGINE__MAX_REPLICAS": "8",
        },
    ).start()
    yield process
    process.stop()
