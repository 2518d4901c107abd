"""The FastAPI application every service is built from: health, metrics, problems, limits."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, FastAPI, Path, Request, Response
from fastapi.responses import JSONResponse
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common import audit, metrics, roles
from common.asyncapi import CONTRACTS
from common.audit import AuditMiddleware, route_template
from common.auth import (
    OPERATOR_SCHEME,
    PARTNER_SCHEME,
    UNAUTHORIZED_HEADERS,
    bearer_token,
    is_operator_token,
)
from common.db import UnitOfWork
from common.i18n import _
from common.identity import TokenVerifier, config_of, looks_like_jwt, remote_verifier
from common.problems import (
    PROBLEM_MEDIA_TYPE,
    PROBLEM_SCHEMA,
    ProblemError,
    install_problem_handlers,
    language_of,
    problem_response,
)
from common.roles import ENDPOINTS, OPERATOR_ACTOR, Actor, Rule, UnitOf, scope_of
from common.runtime import ServiceRuntime
from common.schemas import schema_of

log = logging.getLogger(__name__)

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Resource-Policy": "same-origin",
}
# JSON and CSV never need to load anything; the Swagger UI page (/docs, dev and test only)
# loads its scripts from a CDN and is left without this policy.
API_CSP = ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect"})
CONTRACTS_BY_TYPE = {contract.CE_TYPE: contract for contract in CONTRACTS}


class SchemaResponse(JSONResponse):
    media_type = "application/schema+json"


# Dependencies are `async def` even when they do no I/O: FastAPI runs a plain `def` dependency
# in its thread pool, a thread hand-off per request that costs more than the work itself.
async def get_runtime(request: Request) -> ServiceRuntime:
    runtime: ServiceRuntime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[ServiceRuntime, Depends(get_runtime)]


async def get_unit_of_work(runtime: RuntimeDep) -> AsyncIterator[UnitOfWork]:
    async with runtime.unit_of_work() as uow:
        yield uow


UowDep = Annotated[UnitOfWork, Depends(get_unit_of_work)]


async def identify(request: Request, runtime: ServiceRuntime) -> Actor | None:
    """The operator (break-glass) or the person of a verified access token; None for any other
    credential (a partner key, which the routes open to partners check themselves).

    A missing token is 401; a JWT that fails verification is 401 with `error="invalid_token"`.
    The actor is left on `request.state.actor` and named in the audit trail.
    """
    token = bearer_token(request)
    if token is None:
        raise ProblemError(
            401, "Unauthorized", "A bearer token is required.", headers=UNAUTHORIZED_HEADERS
        )
    if is_operator_token(token, expected=runtime.settings.admin_token):
        actor = OPERATOR_ACTOR
    else:
        verifier: TokenVerifier | None = getattr(request.app.state, "identity", None)
        if verifier is None or not looks_like_jwt(token):
            return None
        actor = await verifier.verify(token)
    request.state.actor = actor
    audit.identify(audit.actor_of(actor))
    return actor


@dataclass(frozen=True)
class Access:
    """What the caller may do on this route: their scope for the route's action."""

    actor: Actor
    scope: roles.Scope

    def require_resource(self, path: Iterable[str | None], *, what: str, ref: object) -> None:
        """A resource outside the scope (by the codes of its unit's path) is "not found": its
        existence is not revealed."""
        if not self.scope.covers(path):
            raise ProblemError(404, "Not Found", f"No {what} {ref}.")

    def require_unit(self, path: Iterable[str | None], *, code: str) -> None:
        """A unit a request names outside the scope is a 403 (unit codes are public)."""
        if not self.scope.covers(path):
            raise ProblemError(403, "Forbidden", f"The unit {code} is outside your units.")


def rule_of(request: Request, runtime: ServiceRuntime) -> Rule:
    """The matrix's rule for the route this request matched, by its endpoint function (a
    route's own path lacks the prefixes of the routers that include its router)."""
    rules: Mapping[tuple[Any, str], Rule] = request.app.state.rules
    return rules[(request.scope["endpoint"], request.method)]


def access_of(actor: Actor, rule: Rule) -> Access:
    """What `actor` may do on a route of `rule`, or 403 when the matrix allows it nowhere."""
    scope = scope_of(actor, rule.action) if rule.action is not None else None
    if scope is None or (rule.unit is UnitOf.NATIONAL and not scope.nationwide):
        raise ProblemError(403, "Forbidden", "Your roles do not permit this operation.")
    return Access(actor=actor, scope=scope)


async def person_access(request: Request, runtime: ServiceRuntime) -> Access | None:
    """The one check of the permission matrix: the route's action within the caller's scope,
    for the operator or a person; None for another credential (a partner key: the routes open
    to partners check it themselves). The unit check needs the resource: the route makes it
    (`Access.require_resource`, `Access.require_unit`) or leaves out the rows outside
    `Access.scope`."""
    actor = await identify(request, runtime)
    if actor is None:
        return None
    return access_of(actor, rule_of(request, runtime))


async def authorize(
    request: Request, runtime: RuntimeDep, _: Annotated[None, Depends(OPERATOR_SCHEME)]
) -> Access:
    """`person_access` for routes closed to partner keys (they get 403, as they always did)."""
    access = await person_access(request, runtime)
    if access is None:
        raise ProblemError(
            403, "Forbidden", "This operation needs the operator token or a person's access token."
        )
    return access


AccessDep = Annotated[Access, Depends(authorize)]
Authorized = Depends(authorize)


# What every operation of a kind can answer besides its own statuses (documented per route).
BODY_PROBLEMS = {
    "400": "the body is not well-formed (JSON, CSV or NDJSON as declared)",
    "413": "the body is over the size limit",
}
AUTH_PROBLEMS = {"401": "missing or invalid bearer token"}
OPERATOR_PROBLEMS = {"403": "the caller's roles do not permit it (there), or a partner key"}
PARTNER_PROBLEMS = {"429": "the partner key's rate limit; see Retry-After"}
VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")


def _exact_maps(node: Any) -> None:
    """A dict whose keys have a pattern is a map every key of which must match it; pydantic
    writes it as `patternProperties`, which lets any other key through with any value."""
    if isinstance(node, list):
        for item in node:
            _exact_maps(item)
        return
    if not isinstance(node, dict):
        return
    by_pattern = node.get("patternProperties")
    if isinstance(by_pattern, dict) and len(by_pattern) == 1 and "properties" not in node:
        ((pattern, values),) = by_pattern.items()
        del node["patternProperties"]
        node["propertyNames"] = {**node.get("propertyNames", {}), "pattern": pattern}
        node["additionalProperties"] = values
    for value in node.values():
        _exact_maps(value)


def document_problems(document: dict[str, Any]) -> dict[str, Any]:
    """Make the document say what the code answers: every error is an RFC 9457 problem
    (`application/problem+json`, with `errors` for validation), a body can be malformed or too
    large, a bearer token can be missing or wrong, a partner key rate-limited."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            responses: dict[str, Any] = operation.setdefault("responses", {})
            extra: dict[str, str] = {}
            if "requestBody" in operation:
                extra |= BODY_PROBLEMS
                if "422" not in responses:
                    extra["422"] = "Validation Error"
            schemes = {
                name for requirement in operation.get("security", []) for name in requirement
            }
            if schemes:
                extra |= AUTH_PROBLEMS
            if schemes == {OPERATOR_SCHEME.scheme_name}:
                extra |= OPERATOR_PROBLEMS
            if PARTNER_SCHEME.scheme_name in schemes:
                extra |= PARTNER_PROBLEMS
            for status, description in extra.items():
                responses.setdefault(status, {"description": description})
            for status, response in responses.items():
                if status.isdigit() and int(status) >= 400:
                    response["content"] = {
                        PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}
                    }
            operation["responses"] = dict(sorted(responses.items()))
    _exact_maps(document)
    schemas: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})
    for name in VALIDATION_SCHEMAS:
        schemas.pop(name, None)
    schemas["Problem"] = PROBLEM_SCHEMA
    return document


class BodyLimitMiddleware:
    """413 for bodies over the limit, counted as they stream (Content-Length can lie)."""

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, path_limits: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # Streamed bulk endpoints legitimately take far larger bodies than the default.
        self.path_limits = dict(path_limits or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.path_limits.get(scope["path"], self.max_bytes)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._reject(scope, receive, send, limit)
            return
        received = 0
        rejected = False

        async def limited_receive() -> Message:
            nonlocal received, rejected
            message = await receive()
            if message["type"] == "http.request" and not rejected:
                received += len(message.get("body", b""))
                if received > limit:
                    rejected = True
                    await self._reject(scope, receive, send, limit)
                    return {"type": "http.disconnect"}  # the app stops reading the body
            return message

        async def guarded_send(message: Message) -> None:
            if not rejected:  # the 413 has been sent: drop whatever the app answers
                await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not rejected:
                raise

    async def _reject(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        response = problem_response(
            status=413,
            title="Content Too Large",
            detail=_("The body exceeds {limit} bytes.", limit=limit),
            instance=scope["path"],
            language=language_of(HTTPConnection(scope)),
        )
        await response(scope, receive, send)


def create_app(
    *,
    runtime: ServiceRuntime,
    routers: Sequence[APIRouter],
    title: str,
    description: str,
    run_workers: bool | None = None,
    body_limits: Mapping[str, int] | None = None,
) -> FastAPI:
    settings = runtime.settings
    workers = settings.run_workers if run_workers is None else run_workers

    identity_config = config_of(settings)
    # Only the keys and the disabled list travel on it: short timeouts, no redirects.
    identity_client = httpx.AsyncClient(timeout=5.0) if identity_config else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start(workers=workers)
        yield
        await runtime.stop()
        if identity_client is not None:
            await identity_client.aclose()

    public_docs = settings.cdt_env != "prod"
    app = FastAPI(
        title=title,
        description=description,
        version="1.0.0",
        lifespan=lifespan,
        docs_url="/docs" if public_docs else None,
        redoc_url=None,
        # The document stays published in production (agencies build clients from it); only
        # the interactive page is hidden.
        openapi_url="/openapi.json",
        # Our spans come from the OpenTelemetry instrumentation below, with our provider;
        # FastAPI's own would only re-check the global providers (and os.environ) per request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.runtime = runtime
    # The verifier of access tokens (services may replace it: teams verifies its own tokens).
    app.state.identity = (
        remote_verifier(identity_config, identity_client)
        if identity_config and identity_client
        else None
    )
    install_problem_handlers(app)
    app.add_middleware(
        BodyLimitMiddleware, max_bytes=settings.max_body_bytes, path_limits=body_limits
    )
    app.include_router(_operations_router())
    for router in routers:
        app.include_router(router)
    app.state.rules = rules_by_endpoint(app, service=settings.service_name)
    app.add_middleware(AuditMiddleware)
    app.add_middleware(HttpMetricsMiddleware, service=settings.service_name)
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_problems(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    if settings.otel_traces_exporter != "none":  # spans nobody exports still cost CPU
        FastAPIInstrumentor.instrument_app(
            app, tracer_provider=runtime.tracer_provider, excluded_urls="healthz,readyz,metrics"
        )
    return app


def api_routes(app: FastAPI) -> Iterator[tuple[str, str, Any]]:
    """(method, path, dependant) of every API route (not /docs or /openapi.json), with the
    dependencies its routers add."""
    for route in app.routes:
        # FastAPI nests included routers; their effective routes carry the full path and the
        # router-level dependencies. A plain APIRoute is its own context.
        contexts: Iterable[Any] = (
            route.effective_route_contexts()
            if hasattr(route, "effective_route_contexts")
            else [route]
        )
        for context in contexts:
            dependant = getattr(context, "dependant", None)
            if dependant is None:  # /docs, /openapi.json: plain Starlette routes
                continue
            for method in sorted(set(context.methods) - {"HEAD", "OPTIONS"}):
                yield method, context.path, dependant


def rules_by_endpoint(app: FastAPI, *, service: str) -> dict[tuple[Any, str], Rule]:
    """Each route's rule in the permission matrix, by (endpoint function, method); a route the
    matrix does not declare refuses to start the service."""
    if service not in ENDPOINTS:  # an app of the tests' own, not one of the four services
        return {}
    declared = ENDPOINTS[service]
    routes = list(api_routes(app))
    missing = [f"{m} {p}" for m, p, _ in routes if f"{m} {p}" not in declared]
    if missing:
        raise RuntimeError(f"routes without a rule in common.roles.ENDPOINTS: {missing}")
    return {(dependant.call, m): declared[f"{m} {p}"] for m, p, dependant in routes}


class HttpMetricsMiddleware:
    """Request count and latency by route template, plus security headers.

    Pure ASGI rather than `@app.middleware("http")`: no per-request task and body re-wrapping,
    which is measurable on the single-event ingest path.
    """

    def __init__(self, app: ASGIApp, *, service: str) -> None:
        self.app = app
        self.service = service
        self.extra_headers = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
        self.api_headers = [*self.extra_headers, (API_CSP[0].lower().encode(), API_CSP[1].encode())]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        responded = False
        extra = self.extra_headers if scope["path"] in DOCS_PATHS else self.api_headers

        async def send_with_headers(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status = message["status"]
                responded = True
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            if responded:
                raise
            # Answered here rather than by Starlette's outermost error middleware, so that a
            # 500 carries the security headers too. Nothing of the exception reaches the client.
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            await problem_response(
                status=500,
                title="Internal Server Error",
                instance=scope["path"],
                language=language_of(HTTPConnection(scope)),
            )(scope, receive, send_with_headers)
        finally:
            route = route_template(scope)
            method = scope["method"]
            metrics.HTTP_REQUESTS.labels(self.service, method, route, str(status)).inc()
            metrics.HTTP_LATENCY.labels(self.service, method, route).observe(
                time.perf_counter() - started
            )


def _operations_router() -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/readyz",
        summary="Readiness: Postgres and Kafka reachable, not draining",
        responses={503: {"description": "not ready"}},
    )
    async def readyz(runtime: RuntimeDep) -> JSONResponse:
        checks = await runtime.readiness()
        ready = checks["database"] and checks["kafka"] and not checks["draining"]
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    @router.get(
        "/schemas/{ce_type}.json",
        summary="The JSON Schema of an event type: what its `ce_dataschema` header points at",
        response_class=SchemaResponse,
        responses={
            200: {"content": {SchemaResponse.media_type: {"schema": {"type": "object"}}}},
            404: {"description": "no such event type"},
        },
    )
    async def event_schema(ce_type: Annotated[str, Path(max_length=100)]) -> SchemaResponse:
        contract = CONTRACTS_BY_TYPE.get(ce_type)
        if contract is None:
            raise ProblemError(404, "Not Found", "No event type of that name.")
        return SchemaResponse(schema_of(contract))

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router
