"""The orchestrator's Litestar application.

It is where the orchestrator meets the control center: the guard (`security.Security`)
is written against `orchestrator.http.access.Gatekeeper`, and is given the control
center's `Gate` over the shared database here, the one place the API names it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar, Router, asgi
from litestar.datastructures import State
from litestar.types import ControllerRouterHandler

from control_center.gate import Gate, account_routes
from orchestrator.api.batch import BatchController
from orchestrator.api.containers import ContainerController, DockerController
from orchestrator.api.controllers import TaskController, WorkflowController, health
from orchestrator.api.deployments import DeploymentController, notifications
from orchestrator.api.host.controllers import HOST_CONTROLLERS, HOST_STREAMS
from orchestrator.api.idempotency import Idempotency
from orchestrator.api.kubernetes import KubernetesController
from orchestrator.api.monitoring import event_stream, http_metrics, metrics, request_context
from orchestrator.api.providers import ProviderController, publish_operations
from orchestrator.api.resources import ResourceController
from orchestrator.api.rollback import RollbackController
from orchestrator.api.security import OWN_ACCESS, Security
from orchestrator.api.state import StateController
from orchestrator.api.vm_console import vm_console
from orchestrator.api.vms import VmController
from orchestrator.api.webhooks import WebhookController
from orchestrator.deployment_health import HealthMonitor
from orchestrator.http.aliases import AliasedLitestar, Aliases, first_segments
from orchestrator.http.errors import EXCEPTION_HANDLERS, document_errors
from orchestrator.http.limits import BodyLimits, refuse_nul, screen_request
from orchestrator.http.openapi import allow_every_method, openapi_config, publish, schema_assets
from orchestrator.http.versioning import versioning
from orchestrator.service import Orchestrator
from orchestrator.ui.admin import admin_router
from orchestrator.ui.resources import resources_router
from orchestrator.ui.routes import console_headers, console_router
from orchestrator.vms import Vms


def create_app(orchestrator: Orchestrator) -> Litestar:
    # Restarts replicas that fail their health checks (docs/deployments.md).
    monitor = HealthMonitor.of(orchestrator)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await orchestrator.start()
        try:
            if monitor is not None:
                monitor.start()
            yield
        finally:
            if monitor is not None:
                await monitor.stop()
            await orchestrator.stop()

    resources: list[ControllerRouterHandler] = [
        TaskController,
        WorkflowController,
        BatchController,
        StateController,
        RollbackController,
        WebhookController,
        ProviderController,
        ResourceController,
        *HOST_CONTROLLERS,
        VmController,
        vm_console,
        # containers (issue 14)
        DeploymentController,
        ContainerController,
        DockerController,
        KubernetesController,
    ]
    # The same endpoints under /api/v1, for clients whose base URL ends there (seeds 000
    # and 001), and seed 002's /v1/deployments…: aliases of the root routes, not copies
    # (orchestrator/http/aliases.py); the OpenAPI schema lists the unprefixed ones.
    aliases = Aliases(
        {"/api/v1": first_segments(resources), "/v1": first_segments([DeploymentController])}
    )
    seed_002 = Router(path="/v1", route_handlers=[notifications], include_in_schema=False)
    # Login, refresh, logout, MFA, sign-up, one's profile and API keys at this base URL
    # too, and the administration of users, policies and the audit log: the control
    # center's own app over the same database, mounted (docs/architecture.md). The
    # account paths also under /v1 (seed 002), the others as this API's own resources.
    account_mounts = [
        asgi(
            path,
            is_mount=True,
            copy_scope=True,
            name=f"accounts{path}".replace("/", "-"),
            opt={OWN_ACCESS: True},
            include_in_schema=False,
        )(mounted)
        for path, mounted in account_routes(orchestrator.engine, orchestrator.settings).items()
    ]
    security = Security(orchestrator, Gate(orchestrator.engine, orchestrator.settings))
    app = AliasedLitestar(
        route_handlers=[
            health,
            *resources,
            seed_002,
            *account_mounts,
            metrics,
            event_stream,
            *HOST_STREAMS,
            console_router(),  # the web console, /ui (docs/ui.md)
            admin_router(),  # its admin pages, /ui/admin
            resources_router(),  # its VM, deployment and host pages
            schema_assets(),
        ],
        guards=[security.guard],
        middleware=[
            request_context,
            versioning,
            refuse_nul,
            security.audit,
            Idempotency(
                orchestrator.idempotency,
                security.credential_valid,
                orchestrator.settings.server.max_body_bytes,
            ),
            http_metrics(lambda: orchestrator.metrics),
        ],
        lifespan=[lifespan],
        state=State(
            {
                "orchestrator": orchestrator,
                "security": security,
                "vms": Vms(orchestrator),
                "health_monitor": monitor,
            }
        ),
        exception_handlers=EXCEPTION_HANDLERS,
        before_request=screen_request(BodyLimits.of(orchestrator.settings.server)),
        before_send=[allow_every_method, console_headers],
        request_max_body_size=orchestrator.settings.server.max_body_bytes,
        logging_config=None,  # the CLI configures logging (structlog) once
        openapi_config=openapi_config("provisioning orchestrator"),
    )
    app.aliases = aliases
    document_errors(app)
    providers = {"enum": sorted(orchestrator.instance_types)}
    publish(
        app,
        {
            "WorkflowIn.tasks": {"maxItems": orchestrator.settings.server.max_tasks_per_workflow},
            "TaskIn.provider": providers,
            "Operation.provider": providers,
        },
        then=lambda: publish_operations(app, orchestrator.catalog),
    )
    return app
