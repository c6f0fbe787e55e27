"""Configuration: defaults need no file; TOML then environment override them."""

from __future__ import annotations

import pytest

from orchestrator.settings import ConfigError, load_settings

# Touches no database: runs in the SQLite pass only (tests/conftest.py).
pytestmark = pytest.mark.backend_independent


def test_defaults_need_no_file_and_map_the_seed_clouds_to_the_simulator(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={})
    assert settings.server.port == 9090
    assert settings.control_center.port == 9080
    assert settings.is_sqlite
    assert {name: t["type"] for name, t in settings.providers.items()} == {
        "upcloud": "sim",
        "aws": "sim",
        "local": "local",
        "qemu": "qemu",
    }
    retry = settings.executor.retry
    assert (retry.max_attempts, retry.initial_delay, retry.max_delay) == (3, 5.0, 300.0)


def test_toml_then_environment_override(tmp_path):
    config = tmp_path / "p.toml"
    config.write_text(
        "[server]\nport = 9999\n[executor]\nglobal_limit = 4\n"
        '[providers.upcloud]\ntype = "sim"\nlatency = 0\n'
        '[providers.extra]\ntype = "local"\nmax_concurrent = 2\n'
    )
    settings = load_settings(
        config, environ={"PROVISIONING_SERVER__PORT": "1234", "PROVISIONING_DATA_DIR": "/x"}
    )
    assert settings.server.port == 1234
    assert settings.executor.global_limit == 4
    assert settings.data_dir == "/x"
    assert settings.providers["upcloud"]["latency"] == 0
    assert settings.providers["aws"]["type"] == "sim"  # defaults kept
    assert settings.providers["extra"]["max_concurrent"] == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nport = 'x'\n", "server.port"),
        ("[server]\nprot = 1\n", "prot"),
        ("[executor]\nglobal_limit = 0\n", "executor.global_limit"),
        ("[executor]\ndefault_parallel_limit = 1001\n", "executor.default_parallel_limit"),
        ("[server]\nmax_body_depth = 0\n", "server.max_body_depth"),
        ("[server]\nidempotency_pending_ttl = 0\n", "server.idempotency_pending_ttl"),
        (
            "[server]\nidempotency_ttl = 10\nidempotency_pending_ttl = 60\n",
            "server.idempotency_pending_ttl",
        ),
        ("[providers.x]\nlatency = 1\n", "providers.x needs a `type`"),
        ("[worker]\nmetrics_port = 70000\n", "worker.metrics_port must be between 0"),
        ("[smtp]\nsecurity = 'ssl'\n", "smtp.security"),
        ("[smtp]\nhost = 'mail.example.com'\n", "smtp.sender"),
        ("[auth]\nreset_url = 'https://x/reset'\n", "auth.reset_url"),
        ("[deployments]\nhealth_monitor = 'maybe'\n", "deployments.health_monitor"),
        ("[deployments]\nhealth_monitr = true\n", "health_monitr"),
        ("not toml [", "not valid TOML"),
    ],
)
def test_bad_configuration_names_the_key(tmp_path, text, message):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("`", ".")):
        load_settings(config, environ={})


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_commands_are_kept_from_the_data_dir_the_config_file_and_the_database(tmp_path):
    config = tmp_path / "etc" / "provisioning.toml"
    config.parent.mkdir()
    database = tmp_path / "db" / "p.db"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\ndatabase_url = "sqlite+aiosqlite:///{database}"\n'
    )
    settings = load_settings(config, environ={})
    assert settings.protected_paths == (tmp_path / "data", config, database)
    embedded = load_settings(environ={"PROVISIONING_DATA_DIR": str(tmp_path / "d")})
    assert embedded.protected_paths == (tmp_path / "d",)  # the database is inside it


def test_the_webhook_block_as_one_table_per_endpoint(tmp_path):
    """docs/monitoring.md's equivalent of the reference API's webhook block."""
    config = tmp_path / "webhooks.toml"
    config.write_text(
        "[webhooks]\nenabled = true\n\n[[webhooks.endpoints]]\n"
        'url = "https://your-system.com/webhook"\n'
        'events = ["task.completed", "task.failed", "batch.completed"]\n'
        'secret = "webhook-secret"\n'
    )
    webhooks = load_settings(config, environ={}).webhooks
    assert webhooks.enabled
    [endpoint] = webhooks.endpoints
    assert endpoint.url == "https://your-system.com/webhook"
    assert endpoint.events == ["task.completed", "task.failed", "batch.completed"]
