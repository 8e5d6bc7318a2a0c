"""The synchronous client: the calls of ``_ops`` run with ``httpx.Client``."""

from __future__ import annotations

import builtins
import logging
import os
import threading
import time
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


class _Runner:
    """Runs a call's effects with ``httpx.Client`` and ``time.sleep``."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http

    def run(self, op: Op[T]) -> T:
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
                    result = self.http.request(
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
                time.sleep(effect.seconds)
            elif isinstance(effect, Blocking):
                try:
                    result = effect.fn()
                except Exception as exc:
                    error = exc


class Tenant:
    """A tenant's calls: commands answer a :class:`Decision`, views a ``dict``.

    From :meth:`Client.tenant`, or the :class:`Client` itself for a tenant key.
    A denial is a ``Decision`` with ``ok=False``; a rejection raises a
    :class:`LedgerError` subclass; no decision within ``timeout`` raises
    :class:`LedgerUnavailable` (except, with ``cache_dir``, for ``upload`` and
    ``consume_tokens``, which are then decided offline).
    """

    def __init__(self, runner: _Runner, ops: TenantOps) -> None:
        self._runner = runner
        self._ops = ops

    def _run(self, op: Op[T]) -> T:
        return self._runner.run(op)

    def consume_tokens(self, request: str, tokens: int) -> Decision:
        """Records ``tokens`` of AI use under ``request``, the call's idempotency key.

        Denied past the token limit on a ``block`` plan (``token_limit_exceeded``,
        with ``used``, ``limit``, ``requested``). With ``cache_dir``, decided from
        the last usage read while the ledger is unreachable.
        """
        return self._run(self._ops.consume_tokens(request, tokens))

    def upload(self, file: str, bytes: int) -> Decision:
        """Records a stored file of ``bytes`` bytes; ``file`` (unique among live files) is the key.

        Denied past the storage quota (``storage_quota_exceeded``, with ``used``,
        ``quota``, ``requested``). With ``cache_dir``, decided from the last usage
        read while the ledger is unreachable.
        """
        return self._run(self._ops.upload(file, bytes))

    def delete_file(self, file: str, *, idempotency_key: str | None = None) -> Decision:
        """Deletes a live file, freeing its bytes (an upload of it still queued is delivered first)."""
        return self._run(self._ops.delete_file(file, idempotency_key))

    def purchase_addon(self, addon: str, purchase: str, payment: str, quantity: int = 1) -> Decision:
        """Buys an add-on: ``payment`` ``"invoice"`` (active at once) or ``"card"`` (pending).

        ``purchase`` is the idempotency key. Needs the tenant's admin key or the panel key.
        """
        return self._run(self._ops.purchase_addon(addon, purchase, payment, quantity))

    def cancel_addon(self, purchase: str, *, idempotency_key: str | None = None) -> Decision:
        """Stops an active recurring add-on and its grants, now."""
        return self._run(self._ops.cancel_addon(purchase, idempotency_key))

    def set_seats(self, seats: int, *, idempotency_key: str | None = None) -> Decision:
        """Changes the number of seats (within the plan's range)."""
        return self._run(self._ops.set_seats(seats, idempotency_key))

    def set_usage_alerts(
        self,
        tokens: Sequence[int] | None = None,
        storage: Sequence[int] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Decision:
        """Replaces the usage alert thresholds (percent of the limit) of each meter given."""
        return self._run(self._ops.set_usage_alerts(tokens, storage, idempotency_key))

    def batch(self, commands: Sequence[Mapping[str, Any]]) -> list[Decision]:
        """Several commands (``{"cmd": ..., fields}``) in one request, decided in order.

        Each item without a key of its own gets an ``idempotency_key``, so a
        retried batch is recognized item by item. Not decided offline.
        """
        return self._run(self._ops.batch(commands))

    def usage(self, at: Instant | None = None) -> dict[str, Any]:
        """``ledger usage --json``: plan, seats, period, storage, tokens, add-ons."""
        return self._run(self._ops.usage(at))

    def invoice(self, at: Instant | None = None, explain: bool = False) -> dict[str, Any]:
        """``ledger invoice --json`` of the period holding ``at`` (default: now)."""
        return self._run(self._ops.invoice(at, explain))

    def invoices(self) -> dict[str, Any]:
        """Every period of the tenant with its status and totals."""
        return self._run(self._ops.invoices())


class Admin:
    """The control panel's calls (the panel key); ``client.admin``."""

    def __init__(self, runner: _Runner, ops: AdminOps) -> None:
        self._runner = runner
        self._ops = ops

    def command(
        self, command: str, fields: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> Decision:
        """Any command by name with its fields (``tenant`` included where it has one)."""
        return self._runner.run(self._ops.command(command, fields, idempotency_key))

    def define_plan(self, plan: Mapping[str, Any], *, idempotency_key: str | None = None) -> Decision:
        """Defines a plan (plans are immutable): the ``define_plan`` plan object."""
        return self.command("define_plan", {"plan": dict(plan)}, idempotency_key=idempotency_key)

    def define_addon(self, addon: Mapping[str, Any], *, idempotency_key: str | None = None) -> Decision:
        """Defines an add-on (add-ons are immutable)."""
        return self.command("define_addon", {"addon": dict(addon)}, idempotency_key=idempotency_key)

    def subscribe(
        self, tenant: str, plan: str, seats: int, *, idempotency_key: str | None = None
    ) -> Decision:
        """Subscribes a tenant to a plan, starting now."""
        body = {"tenant": tenant, "plan": plan, "seats": seats}
        return self.command("subscribe", body, idempotency_key=idempotency_key)

    def change_plan(self, tenant: str, plan: str, *, idempotency_key: str | None = None) -> Decision:
        """Moves a tenant to another plan, now."""
        return self.command("change_plan", {"tenant": tenant, "plan": plan}, idempotency_key=idempotency_key)

    def cancel(self, tenant: str, *, idempotency_key: str | None = None) -> Decision:
        """Ends a subscription, finalizing every unclosed period."""
        return self.command("cancel", {"tenant": tenant}, idempotency_key=idempotency_key)

    def settle_payment(
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
        return self.command("settle_payment", body, idempotency_key=idempotency_key)

    def close_period(self, tenant: str, *, idempotency_key: str | None = None) -> Decision:
        """Finalizes the tenant's earliest unclosed period (once it has ended)."""
        return self.command("close_period", {"tenant": tenant}, idempotency_key=idempotency_key)

    def batch(self, commands: Sequence[Mapping[str, Any]]) -> list[Decision]:
        """Several panel commands (each naming its tenant), decided in order."""
        return self._runner.run(self._ops.batch(commands))

    def tenants(self) -> list[dict[str, Any]]:
        """Every tenant with plan, status, seats, storage and tokens."""
        return self._runner.run(self._ops.tenants())

    def add_key(self, role: str, tenant: str | None = None) -> dict[str, Any]:
        """A new API key (``role``: ``user``, ``admin`` or ``panel``): ``{"id", "key", "tenant", "role"}``."""
        return self._runner.run(self._ops.add_key(role, tenant))

    def list_keys(self) -> list[dict[str, Any]]:
        """Every key: ``{"id", "tenant", "role", "created"}`` (never the key itself)."""
        return self._runner.run(self._ops.list_keys())

    def revoke_key(self, key_id: str) -> dict[str, Any]:
        """Revokes a key by id: ``{"id", "revoked": True}``."""
        return self._runner.run(self._ops.revoke_key(key_id))


class Webhooks:
    """Webhook endpoints; ``client.webhooks`` (the panel key, or a tenant admin key for its tenant)."""

    def __init__(self, runner: _Runner, ops: WebhookOps) -> None:
        self._runner = runner
        self._ops = ops

    def add(
        self,
        url: str,
        tenant: str | None = None,
        types: Sequence[str] | None = None,
        retries: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """Registers an endpoint: ``{"id", "secret"}``; verify deliveries with ``standardwebhooks``."""
        return self._runner.run(self._ops.add(url, tenant, types, retries))

    def list(self) -> builtins.list[dict[str, Any]]:
        """Every endpoint the key may see (never a secret)."""
        return self._runner.run(self._ops.endpoints())

    def remove(self, endpoint_id: str) -> dict[str, Any]:
        """Removes an endpoint: ``{"id", "removed": True}``."""
        return self._runner.run(self._ops.remove(endpoint_id))


class Client(Tenant):
    """The ledger's HTTP API, synchronously (``httpx``).

    ``url`` is the ledger's base URL (``http://127.0.0.1:8080``) and ``key`` an
    API key. A tenant key's tenant comes from the key (``GET /v1/me``), and the
    tenant calls are this object's methods; with the panel key, use
    ``client.tenant("acme")``, ``client.admin`` and ``client.webhooks``.

    With ``cache_dir``, ``upload`` and ``consume_tokens`` fail closed while the
    ledger is unreachable: decided from the last usage read if it is at most
    ``max_staleness`` seconds old and within ``offline_share`` of what remained,
    else denied (``ledger_unreachable``, ``offline_limit_exceeded``); what is
    admitted is queued in ``cache_dir`` (SQLite, shared by the processes that
    use the same directory) and delivered, in order, once the ledger answers.
    ``timeout`` bounds each call, retries included.
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
        self._http = httpx.Client(base_url=url, headers=headers(key), timeout=timeout)
        cache = Cache(cache_dir, max_staleness, offline_share) if cache_dir is not None else None
        self._session = Session(key, cache=cache, timeout=timeout)
        runner = _Runner(self._http)
        super().__init__(runner, TenantOps(self._session, None))
        self.admin = Admin(runner, AdminOps(self._session))
        self.webhooks = Webhooks(runner, WebhookOps(self._session))
        self._courier: threading.Thread | None = None
        self._courier_lock = threading.Lock()
        self._closed = threading.Event()
        self._session.wake_courier = self._wake_courier
        if cache is not None and cache.pending(self._session.key_hash):
            self._wake_courier()

    def __repr__(self) -> str:
        return f"Client({str(self._http.base_url)!r}, cache_dir={self.cache_dir!r})"

    @property
    def cache_dir(self) -> str | None:
        """The offline fallback's directory, if any."""
        cache = self._session.cache
        return str(cache.directory) if cache is not None else None

    def tenant(self, tenant: str) -> Tenant:
        """The calls about ``tenant`` (the panel key reaches any; a tenant key its own)."""
        return Tenant(self._runner, TenantOps(self._session, tenant))

    def me(self) -> dict[str, Any]:
        """Whom the key speaks for: ``{"id", "tenant", "role", "actor"}``."""
        return dict(self._run(self._session.me()))

    # -- the offline fallback's outbox -------------------------------------

    def deliver_outbox(self) -> int:
        """Delivers what this key admitted offline, in order; how many were delivered.

        Raises :class:`LedgerUnavailable` if the ledger does not answer (what is
        left stays queued). A background thread also does this once the
        ledger answers again.
        """
        return max(self._run(self._session.deliver(wait=True)), 0)

    def pending_offline(self) -> list[dict[str, Any]]:
        """Uses admitted offline, not yet delivered, oldest first (``{"tenant", "cmd", ...}``)."""
        cache = self._session.cache
        return cache.queued(self._session.key_hash) if cache is not None else []

    def refused_offline(self) -> list[dict[str, Any]]:
        """Uses admitted offline that the ledger then refused: ``{"command", "answer"}`` each.

        The site was told yes, so it may need to act on them; they stay until
        :meth:`forget_refused`.
        """
        cache = self._session.cache
        return cache.refused() if cache is not None else []

    def forget_refused(self) -> None:
        """Clears the refused list."""
        if self._session.cache is not None:
            self._session.cache.forget_refused()

    def _wake_courier(self) -> None:
        with self._courier_lock:
            if self._courier is not None or self._closed.is_set():
                return
            self._courier = threading.Thread(target=self._deliver_in_background, daemon=True)
            self._courier.name = "ledger-client-outbox"
            self._courier.start()

    def _deliver_in_background(self) -> None:
        cache = self._session.cache
        assert cache is not None
        while not self._closed.wait(PROBE_INTERVAL):
            try:
                left = self._run(self._session.courier_round())
            except Exception:
                log.debug("the outbox was not delivered yet", exc_info=True)
                left = True
            if not left:
                with self._courier_lock:
                    if not cache.pending(self._session.key_hash):
                        self._courier = None
                        return
        with self._courier_lock:
            self._courier = None

    def close(self) -> None:
        """Closes the connections (and stops the background delivery; the outbox stays)."""
        self._closed.set()
        courier = self._courier
        if courier is not None and courier is not threading.current_thread():
            courier.join(timeout=self._session.timeout + PROBE_INTERVAL)
        self._http.close()
        if self._session.cache is not None:
            self._session.cache.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
