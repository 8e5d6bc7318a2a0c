"""Every call of the client, once, as a generator of effects (see ``_protocol``).

:class:`Session` holds what a client knows (its key, timeout, cache); the
``*Ops`` classes build each call's request and read its answer. The public
classes in ``_sync`` and ``_async`` only run these generators.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any, Callable
from urllib.parse import quote

from . import _protocol as p
from ._decision import Decision
from ._errors import LedgerError, LedgerUnavailable
from ._offline import METERED, Cache, key_hash
from ._protocol import Blocking, Instant, Op, Retry, Send, Sleep
from ._version import __version__

log = logging.getLogger("ledger_client")

# Commands whose own field is their idempotency key (they ignore the header).
OWN_KEY = {"upload": "file", "consume_tokens": "request", "purchase_addon": "purchase"}

# How long a use waits for another process to finish delivering the outbox
# before it is decided offline, at most (and at most the client's timeout).
_DELIVERY_POLL = 0.01


def check_options(max_staleness: float, offline_share: float, timeout: float) -> None:
    """Refuses options outside their ranges."""
    if not 0.0 <= offline_share <= 1.0:
        raise ValueError(f"offline_share must be between 0 and 1, not {offline_share}")
    if max_staleness < 0:
        raise ValueError(f"max_staleness must not be negative, not {max_staleness}")
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, not {timeout}")


def headers(key: str) -> dict[str, str]:
    """The headers every request carries."""
    return {"Authorization": f"Bearer {key}", "User-Agent": f"ledger-client-python/{__version__}"}


def new_key() -> str:
    """A fresh idempotency key."""
    return f"py-{uuid.uuid4()}"


def _segment(text: str) -> str:
    return quote(text, safe="")


class Session:
    """What every call of one client shares: the key, the timeout, the cache."""

    def __init__(
        self,
        key: str,
        *,
        cache: Cache | None,
        timeout: float,
    ) -> None:
        self.key_hash = key_hash(key)
        self.cache = cache
        self.timeout = timeout
        self.me_answer: dict[str, Any] | None = None
        # Set by the running client: starts delivering the outbox in the background.
        self.wake_courier: Callable[[], None] = lambda: None

    # -- requests -------------------------------------------------------

    def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        retry: Retry = Retry.KEYED,
    ) -> Op[Any]:
        """One request (retried per ``retry``); the JSON of its 2xx answer."""
        send = Send(method, path, json=json, params=params, headers=headers)
        response = yield from p.request(send, timeout=self.timeout, retry=retry)
        return p.answer(response)

    def command(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        retry: Retry = Retry.KEYED,
    ) -> Op[Decision]:
        """A command: the same key on every attempt, so a resend is recognized."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        send = Send("POST", path, json=dict(body), headers=headers)
        response = yield from p.request(send, timeout=self.timeout, retry=retry)
        return p.decision(response)

    def me(self) -> Op[dict[str, Any]]:
        """Whom the key speaks for (``GET /v1/me``), asked once.

        With a cache, the answer is kept there, by a hash of the key: a key's
        tenant and role never change, so a process that starts later (even
        while the ledger is unreachable) knows its tenant without asking.
        """
        if self.me_answer is not None:
            return self.me_answer
        stored = self.cache.identity(self.key_hash) if self.cache is not None else None
        if stored is not None:
            self.me_answer = stored
            return stored
        me = p.expect_object((yield from self.call("GET", "/v1/me")), "/v1/me")
        if self.cache is not None:
            self.cache.store_identity(self.key_hash, me)
        self.me_answer = me
        return me

    # -- the outbox -----------------------------------------------------

    def deliver(self, *, wait: bool) -> Op[int]:
        """Delivers this key's outbox in order, with the original keys; how many.

        Holds the delivery lock (one deliverer across the processes sharing
        the cache); ``wait``: for another deliverer to finish (as long as it
        delivers something every ``timeout``), else give up at once (``-1``). One attempt per entry:
        an entry not answered stays, and :class:`LedgerUnavailable` is raised.
        An entry the ledger refuses goes to the refused list.
        """
        cache = self.cache
        if cache is None:
            return 0
        deadline, left = time.monotonic() + self.timeout, -1
        while not cache.delivery.try_acquire():
            if not wait:
                return -1
            # Another process is delivering: wait while it makes progress.
            now_left = cache.count_queued(self.key_hash)
            if now_left == 0:
                return 0
            if now_left != left:
                deadline, left = time.monotonic() + self.timeout, now_left
            if time.monotonic() >= deadline:
                raise LedgerUnavailable(
                    "unavailable", "another process is delivering the outbox, without progress"
                )
            yield Sleep(_DELIVERY_POLL)
        try:
            delivered = 0
            while True:
                entry = cache.next_queued(self.key_hash)
                if entry is None:
                    return delivered
                path = f"/v1/tenants/{_segment(entry.tenant)}/{entry.command}"
                refusal: dict[str, Any] | None
                try:
                    decision = yield from self.command(path, entry.body, retry=Retry.ONCE)
                except LedgerUnavailable:
                    cache.went_offline()
                    raise
                except LedgerError as error:
                    refusal = dict(error.problem) or {
                        "ok": False,
                        "code": error.code,
                        "message": error.detail,
                    }
                else:
                    refusal = None if decision.ok else dict(decision.raw)
                if refusal is not None:
                    log.warning("the ledger refused a use admitted offline: %s %s", entry.command, refusal)
                yield Blocking(partial(cache.delivered, entry, refusal))
                delivered += 1
        finally:
            cache.delivery.release()

    def courier_round(self) -> Op[bool]:
        """One background delivery attempt; whether anything is left to deliver."""
        cache = self.cache
        if cache is None or not cache.pending(self.key_hash):
            return False
        state = cache.state("", self.key_hash)
        if not cache.may_go_online(state, self.timeout + 1):
            return True
        try:
            delivered = yield from self.deliver(wait=False)
        except LedgerError:
            return True
        if delivered < 0:
            # Another process is delivering: leave the probe to the next caller.
            cache.give_up_probe()
        elif state.offline_until:
            cache.came_back()
        return cache.pending(self.key_hash)


class TenantOps:
    """A tenant's calls; ``tenant=None``: the key's own tenant (from ``/v1/me``)."""

    def __init__(self, session: Session, tenant: str | None) -> None:
        self.session = session
        self.fixed_tenant = tenant

    def tenant(self) -> Op[str]:
        """The tenant these calls are about."""
        if self.fixed_tenant is not None:
            return self.fixed_tenant
        me = yield from self.session.me()
        tenant = me.get("tenant")
        if not isinstance(tenant, str):
            raise ValueError(
                "the panel key speaks for no tenant: use client.tenant('<tenant id>') for a tenant's calls"
            )
        return tenant

    def _path(self, tenant: str, tail: str) -> str:
        return f"/v1/tenants/{_segment(tenant)}/{tail}"

    def _command(self, command: str, body: Mapping[str, Any], idempotency_key: str | None) -> Op[Decision]:
        tenant = yield from self.tenant()
        key = None if command in OWN_KEY else (idempotency_key or new_key())
        return (yield from self.session.command(self._path(tenant, command), body, idempotency_key=key))

    # -- metered: upload and token use, with the offline fallback ---------

    def metered(self, command: str, body: dict[str, Any]) -> Op[Decision]:
        """An upload or token use: online when the ledger answers, else from the cache.

        The Rust client's rules: the outbox is delivered before anything is
        decided online; when the ledger does not answer (transport error, 503,
        retries run out) the use is decided offline; after a failure, uses are
        decided offline without trying the network for a second, then one
        caller (of every process on the cache) tries again.
        """
        session, cache = self.session, self.session.cache
        if cache is None:
            return (yield from self._command(command, body, None))
        try:
            tenant = yield from self.tenant()
        except LedgerUnavailable as error:
            # Whose quota this is cannot be known: nothing to decide it from.
            return Decision.local(False, "ledger_unreachable", f"{error.detail}; no cached quota")
        state = cache.state(tenant, session.key_hash)
        reason = "the ledger did not answer"
        if cache.may_go_online(state, session.timeout + 1):
            probing = state.offline_until != 0
            try:
                if state.pending:
                    yield from session.deliver(wait=True)
                decision = yield from session.command(
                    self._path(tenant, command), body, retry=Retry.ONCE if probing else Retry.KEYED
                )
            except LedgerUnavailable as error:
                cache.went_offline()
                reason = f"the ledger did not answer ({error.detail})"
            except LedgerError:
                if probing:  # a rejection is an answer: the ledger is back
                    cache.came_back()
                raise
            else:
                if decision.ok and not decision.duplicate:
                    cache.count_online(tenant, command, int(body[METERED[command][1]]))
                if probing:
                    cache.came_back()
                yield from self._refresh_if_old(tenant, state.read_at)
                return decision
        offline: Decision = yield Blocking(
            partial(cache.decide, tenant, session.key_hash, command, body, reason)
        )
        if offline.ok:
            session.wake_courier()
        return offline

    def _refresh_if_old(self, tenant: str, read_at: float | None) -> Op[None]:
        """Re-reads usage once the reading is a quarter of ``max_staleness`` old."""
        cache = self.session.cache
        if cache is None or (read_at is not None and time.time() - read_at <= cache.max_staleness / 4):
            return
        with contextlib.suppress(LedgerError):
            yield from self.usage()

    def consume_tokens(self, request: str, tokens: int) -> Op[Decision]:
        """``tokens`` of AI use under the key ``request``."""
        return (yield from self.metered("consume_tokens", {"request": request, "tokens": tokens}))

    def upload(self, file: str, bytes_: int) -> Op[Decision]:
        """A stored file of ``bytes_`` (the file id is the key)."""
        return (yield from self.metered("upload", {"file": file, "bytes": bytes_}))

    def delete_file(self, file: str, idempotency_key: str | None) -> Op[Decision]:
        """Deletes a live file; an upload of it still queued offline is delivered first."""
        if self.session.cache is not None and self.session.cache.pending(self.session.key_hash):
            yield from self.session.deliver(wait=True)
        return (yield from self._command("delete_file", {"file": file}, idempotency_key))

    def purchase_addon(self, addon: str, purchase: str, payment: str, quantity: int) -> Op[Decision]:
        """Buys ``quantity`` of an add-on (``payment``: ``invoice`` or ``card``)."""
        body = {"addon": addon, "purchase": purchase, "payment": payment, "quantity": quantity}
        return (yield from self._command("purchase_addon", body, None))

    def cancel_addon(self, purchase: str, idempotency_key: str | None) -> Op[Decision]:
        """Stops an active recurring add-on."""
        return (yield from self._command("cancel_addon", {"purchase": purchase}, idempotency_key))

    def set_seats(self, seats: int, idempotency_key: str | None) -> Op[Decision]:
        """Sets the number of seats."""
        return (yield from self._command("set_seats", {"seats": seats}, idempotency_key))

    def set_usage_alerts(
        self,
        tokens: Sequence[int] | None,
        storage: Sequence[int] | None,
        idempotency_key: str | None,
    ) -> Op[Decision]:
        """Replaces the alert thresholds (percent) of each meter given."""
        body: dict[str, Any] = {}
        if tokens is not None:
            body["tokens"] = list(tokens)
        if storage is not None:
            body["storage"] = list(storage)
        return (yield from self._command("set_usage_alerts", body, idempotency_key))

    def batch(self, commands: Sequence[Mapping[str, Any]]) -> Op[list[Decision]]:
        """Several commands, decided in order; each without a key of its own gets one."""
        tenant = yield from self.tenant()
        items = [keyed(c) for c in commands]
        response = yield from p.request(
            Send("POST", self._path(tenant, "batch"), json={"commands": items}),
            timeout=self.session.timeout,
            retry=Retry.KEYED,
        )
        decisions = p.results(response)
        cache = self.session.cache
        if cache is not None:
            for item, decision in zip(items, decisions):
                command = item.get("cmd")
                if command in METERED and decision.ok and not decision.duplicate:
                    amount = item.get(METERED[command][1])
                    if isinstance(amount, int):
                        cache.count_online(tenant, command, amount)
        return decisions

    # -- views ------------------------------------------------------------

    def usage(self, at: Instant | None = None) -> Op[dict[str, Any]]:
        """``ledger usage --json``; with a cache and no ``at``, also the new reading."""
        tenant = yield from self.tenant()
        cache = self.session.cache
        if cache is None or at is not None:
            params = {"at": p.rfc3339(at)} if at is not None else None
            view = yield from self.session.call("GET", self._path(tenant, "usage"), params=params)
            return p.expect_object(view, "the usage view")
        if cache.pending(self.session.key_hash):
            yield from self.session.deliver(wait=True)
        base = cache.base(tenant)
        try:
            usage = p.expect_object(
                (yield from self.session.call("GET", self._path(tenant, "usage"))), "usage"
            )
        except LedgerUnavailable:
            cache.went_offline()
            raise
        cache.remember(tenant, usage, base)
        return usage

    def invoice(self, at: Instant | None, explain: bool) -> Op[dict[str, Any]]:
        """``ledger invoice --json`` (``explain``: with each line's arithmetic and events)."""
        tenant = yield from self.tenant()
        params = {}
        if at is not None:
            params["at"] = p.rfc3339(at)
        if explain:
            params["explain"] = "true"
        view = yield from self.session.call("GET", self._path(tenant, "invoice"), params=params or None)
        return p.expect_object(view, "the invoice view")

    def invoices(self) -> Op[dict[str, Any]]:
        """Every period with its status and totals."""
        tenant = yield from self.tenant()
        view = yield from self.session.call("GET", self._path(tenant, "invoices"))
        return p.expect_object(view, "the invoices view")


def keyed(command: Mapping[str, Any]) -> dict[str, Any]:
    """A batch item with an idempotency key: its own field, or a fresh ``idempotency_key``."""
    item = dict(command)
    if item.get("cmd") not in OWN_KEY and item.get("idempotency_key") is None:
        item["idempotency_key"] = new_key()
    return item


class AdminOps:
    """The control panel's calls (the panel key)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def command(self, command: str, body: Mapping[str, Any], idempotency_key: str | None) -> Op[Decision]:
        """Any command on the panel's path (the body names the tenant)."""
        key = None if command in OWN_KEY else (idempotency_key or new_key())
        return (yield from self.session.command(f"/v1/admin/{command}", body, idempotency_key=key))

    def batch(self, commands: Sequence[Mapping[str, Any]]) -> Op[list[Decision]]:
        """Several panel commands, decided in order."""
        response = yield from p.request(
            Send("POST", "/v1/admin/batch", json={"commands": [keyed(c) for c in commands]}),
            timeout=self.session.timeout,
            retry=Retry.KEYED,
        )
        return p.results(response)

    def tenants(self) -> Op[list[dict[str, Any]]]:
        """Every tenant with plan, status, seats and usage."""
        body = p.expect_object((yield from self.session.call("GET", "/v1/tenants")), "/v1/tenants")
        return list(body.get("tenants", []))

    def add_key(self, role: str, tenant: str | None) -> Op[dict[str, Any]]:
        """A new API key: ``{"id", "key", "tenant", "role"}`` (the key is shown once)."""
        body: dict[str, Any] = {"role": role}
        if tenant is not None:
            body["tenant"] = tenant
        answer = yield from self.session.call("POST", "/v1/keys", json=body, retry=Retry.UNSENT)
        return p.expect_object(answer, "the new key")

    def list_keys(self) -> Op[list[dict[str, Any]]]:
        """Every key's id, tenant, role and creation (never a key)."""
        body = p.expect_object((yield from self.session.call("GET", "/v1/keys")), "/v1/keys")
        return list(body.get("keys", []))

    def revoke_key(self, key_id: str) -> Op[dict[str, Any]]:
        """Revokes a key by its id: ``{"id", "revoked": true}``."""
        answer = yield from self.session.call("DELETE", f"/v1/keys/{_segment(key_id)}", retry=Retry.UNSENT)
        return p.expect_object(answer, "the revocation")


class WebhookOps:
    """Webhook endpoints (the panel key: any tenant; a tenant admin key: its own)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def add(
        self,
        url: str,
        tenant: str | None,
        types: Sequence[str] | None,
        retries: Sequence[str] | None,
    ) -> Op[dict[str, Any]]:
        """Registers an endpoint: ``{"id", "secret"}`` (the secret is shown once)."""
        body: dict[str, Any] = {"url": url}
        if tenant is not None:
            body["tenant"] = tenant
        if types is not None:
            body["types"] = list(types)
        if retries is not None:
            body["retries"] = list(retries)
        answer = yield from self.session.call("POST", "/v1/webhooks", json=body, retry=Retry.UNSENT)
        return p.expect_object(answer, "the new endpoint")

    def endpoints(self) -> Op[list[dict[str, Any]]]:
        """Every endpoint the key may see (never a secret)."""
        body = p.expect_object((yield from self.session.call("GET", "/v1/webhooks")), "/v1/webhooks")
        return list(body.get("webhooks", []))

    def remove(self, endpoint_id: str) -> Op[dict[str, Any]]:
        """Removes an endpoint: ``{"id", "removed": true}``."""
        path = f"/v1/webhooks/{_segment(endpoint_id)}"
        return p.expect_object((yield from self.session.call("DELETE", path, retry=Retry.UNSENT)), "removal")
