"""The control center's Litestar application (default 127.0.0.1:9080).

It shares the orchestrator's database and answers with the same envelope. On start it
reads its keys, opens the database (upgrading the embedded SQLite one), seals TOTP
secrets left in clear by an older version, creates the default policies once, and
creates `admin` when there is no user yet.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from litestar import Litestar, Router, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.types import ControllerRouterHandler

from control_center.accounts import AccountController
from control_center.api_keys import ApiKeyController
from control_center.audit_api import AuditController
from control_center.auth import AuthController
from control_center.bootstrap import ADMIN_USERNAME, admin_password_from_environment, seed
from control_center.guard import key_for
from control_center.middleware import EXCEPTION_HANDLERS_AUDITED, audit_middleware
from control_center.policies_api import PolicyController
from control_center.request_context import Services, provide_principal
from control_center.secret_keys import keys_for
from control_center.users import ProfileController, UserController
from orchestrator.data_dir import private_data_dir
from orchestrator.http.envelope import Envelope
from orchestrator.http.errors import document_errors
from orchestrator.http.limits import BodyLimits, refuse_nul, screen_request
from orchestrator.http.openapi import allow_every_method, openapi_config, publish, schema_assets
from orchestrator.http.ratelimit import RateLimiter
from orchestrator.http.versioning import versioning
from orchestrator.settings import Settings
from orchestrator.store.engine import AsyncEngine, create_engine, ensure_schema


@get("/health", tags=["health"], summary="Liveness: answers without authentication")
async def health() -> Envelope[str]:
    return Envelope("Control center is healthy")


def _announce(password: str) -> None:
    # On the console only, once: never through the logger.
    sys.stdout.write(
        f"control center: created user '{ADMIN_USERNAME}' with the one-time password "
        f"{password}\ncontrol center: it is not shown again; log in and replace it now:\n"
        f"    provisioning login -u {ADMIN_USERNAME}\n"
        "    provisioning mfa enroll && provisioning mfa verify CODE && provisioning password\n"
    )
    sys.stdout.flush()


#: What a client needs of the control center for its own account; served also under
#: `/v1` and `/api/v1` (as the account clients spell them), and by the orchestrator
#: (`account_app`).
ACCOUNT_CONTROLLERS = (AuthController, AccountController, ProfileController, ApiKeyController)
#: The administration endpoints (`/users`, `/policies`, `/audit`): served also by the
#: orchestrator (`account_app`), for its console's admin pages and one base URL.
ADMIN_CONTROLLERS = (UserController, PolicyController, AuditController)


def create_app(settings: Settings, engine: AsyncEngine | None = None) -> Litestar:
    """The app; it opens `engine` (or one for `settings`) when it starts."""
    services = Services(settings=settings, limiter=RateLimiter(), engine=engine)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        private_data_dir(settings.data_dir)
        key_for(settings)  # a bad key setting stops the start, not the first login
        keys_for(settings)
        admin_password_from_environment(settings)
        owned = services.engine is None
        db = services.engine or create_engine(settings)
        try:
            await ensure_schema(db, settings)
            generated = await seed(db, settings)
            if generated is not None:
                _announce(generated)
            services.engine = db
            yield
        finally:
            if owned:
                services.engine = None
                await db.dispose()

    app = _litestar(
        settings,
        services,
        [
            health,
            *ACCOUNT_CONTROLLERS,
            *ADMIN_CONTROLLERS,
            *(
                Router(
                    path=prefix, route_handlers=list(ACCOUNT_CONTROLLERS), include_in_schema=False
                )
                for prefix in ("/v1", "/api/v1")
            ),
            schema_assets(),
        ],
        lifespan=[lifespan],
    )
    document_errors(app)
    shortest = {"minLength": settings.auth.min_password_length}
    publish(
        app,
        {
            "UserIn.password": shortest,
            "UserUpdate.password": shortest,
            "PasswordChange.new_password": shortest,
            "RegisterIn.password": shortest,
            "ResetIn.new_password": shortest,
        },
    )
    return app


def account_app(settings: Settings, engine: AsyncEngine) -> Litestar:
    """The control center's own account endpoints (`/auth/…`, `/user/…`, `/api-keys`) and
    administration endpoints (`/users`, `/policies`, `/audit`) as an app of their own,
    over `engine`, for the orchestrator to mount (`control_center.gate.account_routes`).

    The same handlers, middleware (audit trail, rate-limit headers), error envelope and
    request limits as the control center's app, against the same database; it has no
    lifespan: `engine` is the mounting app's, opened and closed by it."""
    services = Services(settings=settings, limiter=RateLimiter(), engine=engine)
    handlers: list[ControllerRouterHandler] = [*ACCOUNT_CONTROLLERS, *ADMIN_CONTROLLERS]
    return _litestar(settings, services, handlers, lifespan=[])


def _litestar(
    settings: Settings,
    services: Services,
    route_handlers: list[ControllerRouterHandler],
    lifespan: list[Callable[[Litestar], AbstractAsyncContextManager[None]]],
) -> Litestar:
    app = Litestar(
        route_handlers=route_handlers,
        dependencies={"principal": Provide(provide_principal)},
        middleware=[versioning, refuse_nul, audit_middleware],
        lifespan=lifespan,
        state=State({"services": services}),
        exception_handlers=EXCEPTION_HANDLERS_AUDITED,
        before_request=screen_request(BodyLimits.of(settings.server)),
        before_send=[allow_every_method],
        request_max_body_size=settings.server.max_body_bytes,
        logging_config=None,
        openapi_config=openapi_config("provisioning control center"),
    )
    return app
