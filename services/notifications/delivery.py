"""Webhook delivery: URL checks and the worker that drains the `deliveries` table.

Deliveries are rows written in the same transaction as the alert, so a crash never loses one.
The worker claims due rows (a short lease, committed before any HTTP call), posts the exact
stored body signed with the subscription's secret, and records the outcome. A worker killed
mid-request leaves its claim to expire; the delivery is then retried with the same id, which
is the `Idempotency-Key` receivers use to drop repeats. At-least-once, by design.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import httpx
from opentelemetry import trace
from opentelemetry.propagate import inject
from opentelemetry.trace import SpanKind, StatusCode, Tracer
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.telemetry import context_from_headers
from notifications import adapters, metrics
from notifications.domain import (
    DELIVERY_HEADER,
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    backoff_seconds,
    is_public_address,
    signature,
)
from notifications.settings import NotificationsSettings

log = logging.getLogger(__name__)
USER_AGENT = "cdt-notifications/1.0"


class WebhookUrlError(ValueError):
    """Why a webhook URL may not be used (safe to show: it echoes no secret)."""


async def check_webhook_url(url: str, *, allow_private: bool, require_https: bool) -> None:
    """Refuse URLs that could reach internal services (SSRF): every address the host resolves
    to must be public, unless private targets are explicitly allowed (tests, local dev)."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. a bracketed host that is no IPv6 address
        raise WebhookUrlError("not a URL") from exc
    if parts.scheme not in ("https", "http") or (require_https and parts.scheme != "https"):
        raise WebhookUrlError(
            "the URL must use https" if require_https else "the URL must be http(s)"
        )
    if parts.username or parts.password:
        raise WebhookUrlError("credentials in the URL are not allowed")
    host = parts.hostname
    if not host:
        raise WebhookUrlError("the URL has no host")
    if allow_private:
        return
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise WebhookUrlError("the URL has an invalid port") from exc
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise WebhookUrlError("the host does not resolve") from exc
    except UnicodeError as exc:  # the IDNA codec: an empty or over-long label (`.example`)
        raise WebhookUrlError("the host is not a valid name") from exc
    addresses = {str(info[4][0]) for info in infos}
    if not addresses or not all(is_public_address(a) for a in addresses):
        raise WebhookUrlError("the host resolves to a private, loopback or link-local address")


class DeliveryWorker:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        settings: NotificationsSettings,
        stopping: asyncio.Event,
        rng: Callable[[], float] | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self._tracer = tracer or trace.get_tracer(__name__)
        self._sessions = sessions
        self._settings = settings
        self._stopping = stopping
        self._rng = rng
        self._slots = asyncio.Semaphore(settings.webhook_concurrency)

    async def run(self) -> None:
        async with httpx.AsyncClient(
            follow_redirects=False,  # a redirect could lead to an internal address
            timeout=self._settings.webhook_timeout_seconds,
            headers={"User-Agent": USER_AGENT},
        ) as client:
            while not self._stopping.is_set():
                try:
                    handled = await self.run_once(client)
                except Exception:
                    log.exception("webhook delivery round failed; retrying")
                    handled = 0
                if handled == 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            self._stopping.wait(), timeout=self._settings.webhook_poll_seconds
                        )

    async def run_once(self, client: httpx.AsyncClient) -> int:
        """Claim one batch of due deliveries and attempt them concurrently."""
        async with self._sessions() as session, session.begin():
            claimed = await adapters.claim_due_deliveries(
                session,
                now=datetime.now(UTC),
                lease_seconds=self._settings.webhook_lease_seconds,
                limit=self._settings.webhook_batch_size,
            )
        await asyncio.gather(*(self._attempt(client, row) for row in claimed))
        return len(claimed)

    async def _attempt(self, client: httpx.AsyncClient, row: RowMapping) -> None:
        async with self._slots:
            started = datetime.now(UTC)
            clock = time.perf_counter()
            outcome, status_code, error = await self._post(client, row)
            metrics.WEBHOOK_SECONDS.observe(time.perf_counter() - clock)
        await self._record(
            row, started=started, outcome=outcome, status_code=status_code, error=error
        )

    async def _post(
        self, client: httpx.AsyncClient, row: RowMapping
    ) -> tuple[str, int | None, str | None]:
        # Checked again at every attempt: DNS may have changed since the subscription.
        try:
            await check_webhook_url(
                row["url"],
                allow_private=self._settings.webhook_allow_private,
                require_https=self._settings.cdt_env == "prod",
            )
        except WebhookUrlError as exc:
            return "blocked", None, str(exc)
        body = row["body"].encode()
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature(secret=row["secret"], timestamp=timestamp, body=body),
            IDEMPOTENCY_HEADER: str(row["id"]),
            DELIVERY_HEADER: str(row["id"]),
        }
        parent = context_from_headers({"traceparent": row["traceparent"] or ""})
        with self._tracer.start_as_current_span(
            "POST",
            context=parent,
            kind=SpanKind.CLIENT,
            attributes={
                "http.request.method": "POST",
                "url.full": _without_query(row["url"]),
                "cdt.delivery.id": str(row["id"]),
                "cdt.delivery.attempt": row["attempts"],
            },
        ) as span:
            inject(headers)  # receivers can join the trace too
            try:
                # httpx's timeout bounds each phase; this bounds the whole attempt, so an
                # attempt never outlives its lease (a receiver dripping bytes cannot hold it).
                async with asyncio.timeout(self._settings.webhook_timeout_seconds):
                    response = await client.post(row["url"], content=body, headers=headers)
            except (httpx.HTTPError, TimeoutError) as exc:
                span.set_status(StatusCode.ERROR, type(exc).__name__)
                return "network_error", None, type(exc).__name__
            span.set_attribute("http.response.status_code", response.status_code)
        if 200 <= response.status_code < 300:
            return "success", response.status_code, None
        return "http_error", response.status_code, f"HTTP {response.status_code}"

    async def _record(
        self,
        row: RowMapping,
        *,
        started: datetime,
        outcome: str,
        status_code: int | None,
        error: str | None,
    ) -> None:
        attempt = int(row["attempts"])
        used = attempt - int(row["round_start"])
        finished = datetime.now(UTC)
        next_attempt_at: datetime | None = None
        if outcome == "success":
            next_status = "succeeded"
        elif used >= self._settings.webhook_max_attempts:
            next_status = "dead"
        else:
            next_status = "pending"
            delay = backoff_seconds(
                attempt=used,
                base=self._settings.webhook_backoff_base_seconds,
                cap=self._settings.webhook_backoff_max_seconds,
                **({"rng": self._rng} if self._rng else {}),
            )
            next_attempt_at = finished + timedelta(seconds=delay)
        async with self._sessions() as session, session.begin():
            moved = await adapters.record_attempt(
                session,
                delivery_id=row["id"],
                attempt=attempt,
                started_at=started,
                finished_at=finished,
                outcome=outcome,
                status_code=status_code,
                error=error,
                next_status=next_status,
                next_attempt_at=next_attempt_at,
            )
        metrics.WEBHOOK_DELIVERIES.labels(outcome).inc()
        if moved and next_status == "dead":
            metrics.WEBHOOK_DELIVERIES.labels("dead").inc()
            log.warning("webhook delivery %s is dead after %d attempts", row["id"], used)


def _without_query(url: str) -> str:
    """Query strings may carry receivers' tokens: never put them in traces."""
    return urlsplit(url)._replace(query="", fragment="").geturl()
