"""The host's controllers, mounted by `orchestrator.api.app`."""

from orchestrator.api.host.network import NetworkController
from orchestrator.api.host.storage import StorageController
from orchestrator.api.host.system import SystemController

HOST_CONTROLLERS = [NetworkController, SystemController, StorageController]
