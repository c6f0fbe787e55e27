"""The `provisioning` command: run the service, migrate its database, and drive it.

`cli/app.py` is the root group; it gathers the commands, each module defining one
group or a few commands on what `cli/common.py` shares.

- `serve` (`cli/serve.py`), `worker` (`cli/worker.py`, PostgreSQL only) and `db`
  (`cli/db.py`) work on the local configuration
  (`--config`, `PROVISIONING_*`).
- `workflow` (`cli/workflows.py`), `tasks` (`cli/tasks.py`), `batch` (`cli/batch.py`),
  `checkpoint`, `rollback`, `restore` and `state` (`cli/rollback.py`), and `providers`,
  `apply` and `resources` (`cli/resources.py`), `vm` (`cli/vms.py`) and `host`
  (`cli/host.py`) talk to a running orchestrator over HTTP
  through `orchestrator.client.OrchestratorClient`, at `--url`, else
  `$PROVISIONING_URL`, else the configured server address.
- `login` and `logout` (`cli/login.py`), `mfa` and `password` (`cli/profile.py`),
  `users`, `policies`, `api-keys` and `audit` (`cli/users.py`, …) talk to the control
  center at `--cc-url`/`$PROVISIONING_CC_URL`, else the saved login's, else the
  configured `control_center.host:port`; `audit verify` and `policies
  restore-defaults` work on the database itself (`cli/owner.py`).

Exit codes: 0 success; 1 an error (one line on stderr, `error: …`, never a traceback)
or a workflow that ended Failed or Cancelled; 2 a usage error; 130 when the user stops
watching a workflow with Ctrl-C (the workflow keeps running).
"""

from __future__ import annotations

from orchestrator.cli.app import cli

__all__ = ["cli", "main"]


def main() -> None:
    """The console script."""
    cli(prog_name="provisioning")
