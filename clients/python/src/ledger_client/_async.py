"""The asynchronous client: the calls of ``_ops`` run with ``httpx.AsyncClient``."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import httpx

from ._decision import Decision
from ._offline import PROBE_INTERVAL, Cache
from ._ops import AdminOps, Session, TenantOps, WebhookOps, check_options, headers
from ._protocol import Blocking, Instant, Op, Send, Sleep

T = TypeVar("T")
log = logging.getLogger("ledger_client")


class _AsyncRunner:
    """Runs a call's effects with ``httpx.AsyncClient``, ``asyncio.sleep`` and worker threads."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def run(self, op: Op[T]) -> T:
        result: Any = None
        error: BaseException | None = None
        while True:
            try:
                effect = op.throw(error) if error is not None else op.send(result)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            result, error = None, None
            if isinstance(effect, Send):
                try:
                    result = await self.http.request(
                        effect.method,
                        effect.path,
                        json=effect.json,
                        params=effect.params,
                        headers=effect.headers,
                        timeout=effect.timeout,
                    )
                except httpx.TransportError as exc:
                    error = exc
            elif isinstance(effect, Sleep):
                await asyncio.sleep(effect.seconds)
            elif isinstance(effect, Blocking):
                try:
                    result = await asyncio.to_thread(effect.fn)
                except Exception as exc:
                    error = exc


class AsyncTenant:
    """A tenant's calls, as coroutines: the same as :class:`~ledger_client.Tenant`."""

    def __init__(self, runner: _AsyncRunner, ops: TenantOps) -> None:
        self._runner = runner
        self._ops = ops

    async def consume_tokens(self, request: str, tokens: int) -> Decision:
        """Records ``tokens`` of AI use under ``request`` (see :meth:`Tenant.consume_tokens`)."""
        return await self._runner.run(self._ops.consume_tokens(request, tokens))

    async def upload(self, file: str, bytes: int) -> Decision:
        """Records a stored file of ``bytes`` bytes (see :meth:`Tenant.upload`)."""
        return await self._runner.run(self._ops.upload(file, bytes))

    async def delete_file(self, file: str, *, idempotency_key: str | None = None) -> Decision:
        """Deletes a live file, freeing its bytes."""
        return await self._runner.run(self._ops.delete_file(file, idempotency_key))

    async def purchase_addon(self, addon: str, purchase: str, payment: str, quantity: int = 1) -> Decision:
        """Buys an add-on (``payment``: ``"invoice"`` or ``"card"``; ``purchase`` is the key)."""
        return await self._runner.run(self._ops.purchase_addon(addon, purchase, payment, quantity))

    async def cancel_addon(self, purchase: str, *, idempotency_key: str | None = None) -> Decision:
        """Stops an active recurring add-on."""
        return await self._runner.run(self._ops.cancel_addon(purchase, idempotency_key))

    async def set_seats(self, seats: int, *, idempotency_key: str | None = None) -> Decision:
        """Changes the number of seats."""
        return await self._runner.run(self._ops.set_seats(seats, idempotency_key))

    async def set_usage_alerts(
        self,
        tokens: Sequence[int] | None = None,
        storage: Sequence[int] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Decision:
        """Replaces the usage alert thresholds (percent) of each meter given."""
        return await self._runner.run(self._ops.set_usage_alerts(tokens, storage, idempotency_key))

    async def batch(self, commands: Sequence[Mapping[str, Any]]) -> list[Decision]:
        """Several commands in one request, decided in order (each given a key)."""
        return await self._runner.run(self._ops.batch(commands))

    async def usage(self, at: Instant | None = None) -> dict[str, Any]:
        """``ledger usage --json``."""
        return await self._runner.run(self._ops.usage(at))

    async def invoice(self, at: Instant | None = None, explain: bool = False) -> dict[str, Any]:
        """``ledger invoice --json`` of the period holding ``at``."""
        return await self._runner.run(self._ops.invoice(at, explain))

    async def invoices(self) -> dict[str, Any]:
        """Every period with its status and totals."""
        return await self._runner.run(self._ops.invoices())


class AsyncAdmin:
    """The control panel's calls, as coroutines (see :class:`~ledger_client.Admin`)."""

    def __init__(self, runner: _AsyncRunner, ops: AdminOps) -> None:
        self._runner = runner
        self._ops = ops

    async def command(
        self, command: str, fields: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> Decision:
        """Any command by name with its fields (``tenant`` included where it has one)."""
        return await self._runner.run(self._ops.command(command, fields, idempotency_key))

    async def define_plan(self, plan: Mapping[str, Any], *, idempotency_key: str | None = None) -> Decision:
        """Defines a plan."""
        return await self.command("define_plan", {"plan": dict(plan)}, idempotency_key=idempotency_key)

    async def define_addon(self, addon: Mapping[str, Any], *, idempotency_key: str | None = None) -> Decision:
        """Defines an add-on."""
        return await self.command("define_addon", {"addon": dict(addon)}, idempotency_key=idempotency_key)

    async def subscribe(
        self, tenant: str, plan: str, seats: int, *, idempotency_key: str | None = None
    ) -> Decision:
        """Subscribes a tenant to a plan, starting now."""
        body = {"tenant": tenant, "plan": plan, "seats": seats}
        return await self.command("subscribe", body, idempotency_key=idempotency_key)

    async def change_plan(self, tenant: str, plan: str, *, idempotency_key: str | None = None) -> Decision:
        """Moves a tenant to another plan, now."""
        body = {"tenant": tenant, "plan": plan}
        return await self.command("change_plan", body, idempotency_key=idempotency_key)

    async def cancel(self, tenant: str, *, idempotency_key: str | None = None) -> Decision:
        """Ends a subscription, finalizing every unclosed period."""
        return await self.command("cancel", {"tenant": tenant}, idempotency_key=idempotency_key)

    async def settle_payment(
        self,
        tenant: str,
        purchase: str,
        outcome: str,
        reference: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Decision:
        """Records a card payment's ``outcome`` (``"paid"`` or ``"failed"``)."""
        body: dict[str, Any] = {"tenant": tenant, "purchase": purchase, "outcome": outcome}
        if reference is not None:
            body["reference"] = reference
        return await self.command("settle_payment", body, idempotency_key=idempotency_key)

    async def close_period(self, tenant: str, *, idempotency_key: str | None = None) -> Decision:
        """Finalizes the tenant's earliest unclosed period."""
        return await self.command("close_period", {"tenant": tenant}, idempotency_key=idempotency_key)

    async def batch(self, commands: Sequence[Mapping[str, Any]]) -> list[Decision]:
        """Several panel commands, decided in order."""
        return await self._runner.run(self._ops.batch(commands))

    async def tenants(self) -> list[dict[str, Any]]:
        """Every tenant with plan, status, seats, storage and tokens."""
        return await self._runner.run(self._ops.tenants())

    async def add_key(self, role: str, tenant: str | None = None) -> dict[str, Any]:
        """A new API key: ``{"id", "key", "tenant", "role"}``."""
        return await self._runner.run(self._ops.add_key(role, tenant))

    async def list_keys(self) -> list[dict[str, Any]]:
        """Every key (never the key itself)."""
        return await self._runner.run(self._ops.list_keys())

    async def revoke_key(self, key_id: str) -> dict[str, Any]:
        """Revokes a key by id."""
        return await self._runner.run(self._ops.revoke_key(key_id))


class AsyncWebhooks:
    """Webhook endpoints, as coroutines (see :class:`~ledger_client.Webhooks`)."""

    def __init__(self, runner: _AsyncRunner, ops: WebhookOps) -> None:
        self._runner = runner
        self._ops = ops

    async def add(
        self,
        url: str,
        tenant: str | None = None,
        types: Sequence[str] | None = None,
        retries: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """Registers an endpoint: ``{"id", "secret"}``."""
        return await self._runner.run(self._ops.add(url, tenant, types, retries))

    async def list(self) -> builtins.list[dict[str, Any]]:
        """Every endpoint the key may see."""
        return await self._runner.run(self._ops.endpoints())

    async def remove(self, endpoint_id: str) -> dict[str, Any]:
        """Removes an endpoint."""
        return await self._runner.run(self._ops.remove(endpoint_id))


class AsyncClient(AsyncTenant):
    """The ledger's HTTP API as coroutines (``httpx.AsyncClient``); see :class:`~ledger_client.Client`.

    The same options, calls, rules and cache (a sync and an async client, in
    one process or many, may share one ``cache_dir``). The cache's durable
    writes run in a worker thread; the outbox is delivered by a background
    task once the ledger answers again.
    """

    def __init__(
        self,
        url: str,
        key: str,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        max_staleness: float = 300.0,
        offline_share: float = 0.2,
        timeout: float = 5.0,
    ) -> None:
        check_options(max_staleness, offline_share, timeout)
        self._http = httpx.AsyncClient(base_url=url, headers=headers(key), timeout=timeout)
        cache = Cache(cache_dir, max_staleness, offline_share) if cache_dir is not None else None
        self._session = Session(key, cache=cache, timeout=timeout)
        runner = _AsyncRunner(self._http)
        super().__init__(runner, TenantOps(self._session, None))
        self.admin = AsyncAdmin(runner, AdminOps(self._session))
        self.webhooks = AsyncWebhooks(runner, WebhookOps(self._session))
        self._courier: asyncio.Task[None] | None = None
        self._closed = False
        self._session.wake_courier = self._wake_courier

    def __repr__(self) -> str:
        return f"AsyncClient({str(self._http.base_url)!r}, cache_dir={self.cache_dir!r})"

    @property
    def cache_dir(self) -> str | None:
        """The offline fallback's directory, if any."""
        cache = self._session.cache
        return str(cache.directory) if cache is not None else None

    def tenant(self, tenant: str) -> AsyncTenant:
        """The calls about ``tenant``."""
        return AsyncTenant(self._runner, TenantOps(self._session, tenant))

    async def me(self) -> dict[str, Any]:
        """Whom the key speaks for."""
        return dict(await self._runner.run(self._session.me()))

    async def deliver_outbox(self) -> int:
        """Delivers what this key admitted offline, in order; how many."""
        return max(await self._runner.run(self._session.deliver(wait=True)), 0)

    def pending_offline(self) -> list[dict[str, Any]]:
        """Uses admitted offline, not yet delivered, oldest first."""
        cache = self._session.cache
        return cache.queued(self._session.key_hash) if cache is not None else []

    def refused_offline(self) -> list[dict[str, Any]]:
        """Uses admitted offline that the ledger then refused."""
        cache = self._session.cache
        return cache.refused() if cache is not None else []

    def forget_refused(self) -> None:
        """Clears the refused list."""
        if self._session.cache is not None:
            self._session.cache.forget_refused()

    def _wake_courier(self) -> None:
        if self._closed or (self._courier is not None and not self._courier.done()):
            return
        self._courier = asyncio.get_running_loop().create_task(self._deliver_in_background())

    async def _deliver_in_background(self) -> None:
        while not self._closed:
            await asyncio.sleep(PROBE_INTERVAL)
            try:
                left = await self._runner.run(self._session.courier_round())
            except Exception:
                log.debug("the outbox was not delivered yet", exc_info=True)
                left = True
            if not left:
                return

    async def aclose(self) -> None:
        """Closes the connections (and stops the background delivery; the outbox stays)."""
        self._closed = True
        if self._courier is not None:
            self._courier.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._courier
        await self._http.aclose()
        if self._session.cache is not None:
            self._session.cache.close()

    async def __aenter__(self) -> AsyncClient:
        cache = self._session.cache
        if cache is not None and cache.pending(self._session.key_hash):
            self._wake_courier()  # a previous client left uses to deliver
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
