"""The host's controllers, mounted by `orchestrator.api.app`."""

from orchestrator.api.host.network import NetworkController

HOST_CONTROLLERS = [NetworkController]
