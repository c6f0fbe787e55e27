"""The `provisioning` command: run the service, migrate its database, and drive it.

- `serve` (`cli/serve.py`), `worker` (`cli/worker.py`, PostgreSQL only) and `db`
  (`cli/db.py`) work on the local configuration
  (`--config`, `PROVISIONING_*`).
- `workflow` (`cli/workflows.py`), `tasks` (`cli/tasks.py`), and `providers`, `apply`
  and `resources` (`cli/resources.py`), and `vm` (`cli/vms.py`) talk to a running
  orchestrator over HTTP
  through `orchestrator.client.OrchestratorClient`, at `--url`, else
  `$PROVISIONING_URL`, else the configured server address.

Exit codes: 0 success; 1 an error (one line on stderr, `error: …`, never a traceback)
or a workflow that ended Failed or Cancelled; 2 a usage error; 130 when the user stops
watching a workflow with Ctrl-C (the workflow keeps running).
"""

from __future__ import annotations

from orchestrator.cli import db, resources, serve, tasks, vms, worker, workflows
from orchestrator.cli.app import cli

cli.add_command(vms.vm)

__all__ = ["cli", "db", "main", "resources", "serve", "tasks", "vms", "worker", "workflows"]


def main() -> None:
    """The console script."""
    cli(prog_name="provisioning")
