"""The host's controllers, mounted by `orchestrator.api.app`."""

from orchestrator.api.host.logs import LogController
from orchestrator.api.host.network import NetworkController
from orchestrator.api.host.storage import StorageController
from orchestrator.api.host.streams import log_stream, metrics_stream
from orchestrator.api.host.system import SystemController
from orchestrator.api.host.terminal import terminal_session
from orchestrator.api.host.users import HostUserController

HOST_CONTROLLERS = [
    NetworkController,
    SystemController,
    StorageController,
    HostUserController,
    LogController,
]
#: WebSockets: at the root only, as `/ws` is.
HOST_STREAMS = [metrics_stream, log_stream, terminal_session]
