"""`python -m orchestrator.cli`: the `provisioning` command."""

from orchestrator.cli import main

main()
