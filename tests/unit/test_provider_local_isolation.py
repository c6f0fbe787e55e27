"""A local command reads nothing of the orchestrator's secrets, whoever submits it: not
its environment, not its data directory (signing key, database, attempt log), not its
configuration file, and it cannot write the provider's exit files. Real processes."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from providers.base import PermanentProviderError, ProviderConfigError
from providers.local import LocalProvider
from tests.local_commands import (
    RUN_AS,
    make_call,
    open_directory,
    require_default_isolation,
    sh,
    why_no_bwrap,
)

pytestmark = [
    pytest.mark.backend_independent,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc"),
]
AS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not AS_ROOT, reason="isolation 'user' needs root")
needs_bwrap = pytest.mark.skipif(why_no_bwrap() is not None, reason=why_no_bwrap() or "")

SECRETS = {
    "PROVISIONING_ADMIN_PASSWORD": "admin-password-SECRET",
    "PROVISIONING_AUTH__JWT_SECRET": "jwt-setting-SECRET",
    "PROVISIONING_DATABASE_URL": "postgresql://app:db-password-SECRET@db/provisioning",
}
#: An operator's command trying everything it could to learn or forge something.
EXPLOIT = """
cat "$DATA/jwt.key" "$DATA/provisioning.db" "$DATA/attempts.log" "$CONFIG"
env
tr '\\0' '\\n' < /proc/$ORCHESTRATOR/environ
cat /proc/$ORCHESTRATOR/root$DATA/jwt.key
ls -la "$DATA" "$STATE"
echo 0 > "$STATE/victim.1.exit"
exit 0
"""


@pytest.fixture
def host() -> Iterator[Path]:
    """An orchestrator's files as they often are: a data directory created with the
    default umask (0755), a world-readable configuration file, beside the workspace."""
    with open_directory("provisioning-host-") as root:
        data = root / "data"
        data.mkdir(mode=0o755)
        (data / "jwt.key").write_text("signing-key-SECRET")
        (data / "jwt.key").chmod(0o600)
        (data / "provisioning.db").write_text("database-SECRET")
        (data / "provisioning.db").chmod(0o644)
        (data / "attempts.log").write_text("attempt-log-SECRET")
        (data / "attempts.log").chmod(0o644)
        (root / "provisioning.toml").write_text('auth.jwt_secret = "config-SECRET"\n')
        (root / "provisioning.toml").chmod(0o644)
        (root / "workspace").mkdir(mode=0o777)
        (root / "workspace").chmod(0o777)
        yield root


def provider_on(host: Path, **config: Any) -> LocalProvider:
    return LocalProvider("local", {"state_dir": str(host / "state"), **config})


async def attack(provider: LocalProvider, host: Path, task_id: str = "t1") -> str:
    call = make_call(
        host / "workspace",
        task_id,
        protected_paths=(host / "data", host / "provisioning.toml"),
        **sh(EXPLOIT),
        env={
            "DATA": str(host / "data"),
            "CONFIG": str(host / "provisioning.toml"),
            "STATE": str(provider.state_dir),
            "ORCHESTRATOR": str(os.getpid()),
        },
    )
    return (await provider.apply(call)).output


def assert_nothing_leaked(output: str, provider: LocalProvider) -> None:
    assert "SECRET" not in output, output
    assert not (provider.state_dir / "victim.1.exit").exists()


@pytest.mark.parametrize(
    "isolation",
    ["auto", pytest.param("bwrap", marks=needs_bwrap), pytest.param("user", marks=needs_root)],
)
async def test_a_command_reads_none_of_the_orchestrators_secrets(
    host: Path, monkeypatch: pytest.MonkeyPatch, isolation: str
) -> None:
    require_default_isolation()
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    provider = provider_on(host, isolation=isolation)
    output = await attack(provider, host)
    assert_nothing_leaked(output, provider)
    victim = make_call(host / "workspace", "victim", **sh("true"))
    assert await provider.finished(victim) is None  # nothing forged


@needs_root
async def test_as_root_the_protected_paths_are_made_private_to_the_orchestrator(
    host: Path,
) -> None:
    require_default_isolation()
    provider = provider_on(host)
    assert_nothing_leaked(await attack(provider, host), provider)
    assert (host / "data").stat().st_mode & 0o777 == 0o700
    assert (host / "provisioning.toml").stat().st_mode & 0o777 == 0o600
    assert provider.state_dir.stat().st_mode & 0o777 == 0o700


@needs_bwrap
async def test_in_a_sandbox_the_protected_paths_are_hidden_and_left_as_they_are(
    host: Path,
) -> None:
    provider = provider_on(host, isolation="bwrap")
    assert_nothing_leaked(await attack(provider, host), provider)
    assert (host / "data").stat().st_mode & 0o777 == 0o755
    assert (host / "provisioning.toml").stat().st_mode & 0o777 == 0o644


@needs_root
async def test_a_readable_protected_path_that_is_not_the_orchestrators_is_refused(
    host: Path,
) -> None:
    require_default_isolation()
    config = host / "provisioning.toml"
    shutil.chown(config, user=RUN_AS)
    with pytest.raises(PermanentProviderError, match=r"provisioning\.toml is readable by"):
        await attack(provider_on(host), host)
    assert config.stat().st_mode & 0o777 == 0o644  # not changed


@needs_root
async def test_as_root_a_command_runs_as_the_run_as_user(host: Path) -> None:
    require_default_isolation()
    call = make_call(host / "workspace", command="id", args=["-un"])
    assert (await provider_on(host).apply(call)).output == f"{RUN_AS}\n"
    none = provider_on(host, isolation="none")  # documented: sees what the orchestrator sees
    assert (await none.apply(call)).output == "root\n"


@needs_root
async def test_the_command_writes_only_where_its_user_may(host: Path) -> None:
    """The workspace is its working directory, not its to write in unless it is given
    (the tests give theirs to everyone)."""
    require_default_isolation()
    closed = host / "closed"
    closed.mkdir(mode=0o755)
    call = make_call(closed, **sh("touch made; echo $?"))
    output = (await provider_on(host).apply(call)).output
    assert "Permission denied" in output and not (closed / "made").exists()


async def test_a_state_dir_someone_else_made_is_refused(host: Path) -> None:
    """A command could otherwise write exit files in it: forge another task's end."""
    require_default_isolation()
    state = host / "state"
    state.mkdir(mode=0o777)
    os.chown(state, 12345, 12345)
    with pytest.raises(PermanentProviderError, match="state_dir"):
        await provider_on(host).apply(make_call(host / "workspace", command="true"))


async def test_an_isolation_that_cannot_work_here_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap, no setpriv
    with pytest.raises(ProviderConfigError, match=r"isolation = 'bwrap'.*package `bubblewrap`"):
        LocalProvider("local", {"isolation": "bwrap"})
    if AS_ROOT:
        with pytest.raises(ProviderConfigError, match=r"run_as: no user 'nobody-here'.*dev setup"):
            LocalProvider("local", {"isolation": "user", "run_as": "nobody-here"})
        with pytest.raises(ProviderConfigError, match=r"setpriv"):
            LocalProvider("local", {"isolation": "user"})
    else:
        with pytest.raises(ProviderConfigError, match="bubblewrap"):
            LocalProvider("local", {})  # auto, without root: bwrap, missing here
