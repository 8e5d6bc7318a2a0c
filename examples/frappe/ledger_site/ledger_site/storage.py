"""A tenant site's storage quota and AI tokens, decided by the ledger, failing closed.

- ``File`` ``before_insert`` asks the ledger for the file's bytes (``upload``)
  and refuses the insert with a clear message when it says no.
- An insert rolled back after the ledger admitted it gives the bytes back
  (``frappe.db.after_rollback``); ``on_trash`` frees them once the deletion is
  committed (``frappe.db.after_commit``).
- :func:`metered_ai` runs an AI call only once the ledger admits its token
  budget, under a request id of its own.

One :class:`ledger_client.Client` per site and worker process, with a cache in
the site's private files: while the ledger is unreachable, uploads and token
use are decided from the last usage read (within a share of what remained),
and every worker process of the site shares that allowance and the outbox.

Why ``before_insert``, and why the rollback hook: a quota has to be decided
before the row exists, or there is nothing to refuse with (``after_insert``
is too late to stop the insert, and an ``on_commit`` decision cannot refuse
at all). But ``before_insert`` runs inside the request's transaction, which
can still roll back after the ledger admitted the bytes (a later hook or
validation fails). So the admission is undone from
``frappe.db.after_rollback``, which Frappe runs only when that transaction
is rolled back; a committed insert clears it. Deleting needs no decision, so
``on_trash`` defers the release to ``frappe.db.after_commit``: a deletion
that is rolled back keeps its bytes counted.

Frappe sets the document's ``name`` after ``before_insert``, so the ledger's
file id is our own: a UUID stored on the document (the custom field
``ledger_file_id``, a fixture of this app) in ``before_insert``, and read by
``on_trash``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import uuid
from typing import Any, Callable, TypeVar

import frappe
from frappe import _
from ledger_client import Client, Decision, LedgerError, LedgerUnavailable, NotFound

T = TypeVar("T")

_clients: dict[tuple[str, int], Client] = {}


def ledger() -> Client:
    """The site's client in this worker process (a forked worker makes its own).

    ``site_config.json``: ``ledger_url``, ``ledger_key`` (the site's tenant user
    key), and optionally ``ledger_cache_dir`` (default: the site's
    ``private/ledger-cache``), ``ledger_offline_share`` and ``ledger_max_staleness``.
    """
    site = frappe.local.site
    client = _clients.get((site, os.getpid()))
    if client is None:
        conf = frappe.conf
        client = Client(
            conf["ledger_url"],
            conf["ledger_key"],
            cache_dir=conf.get("ledger_cache_dir") or frappe.get_site_path("private", "ledger-cache"),
            offline_share=float(conf.get("ledger_offline_share", 0.2)),
            max_staleness=float(conf.get("ledger_max_staleness", 300.0)),
            timeout=float(conf.get("ledger_timeout", 5.0)),
        )
        _clients[(site, os.getpid())] = client
    return client


def refusal(decision: Decision) -> str:
    """What a user is told when the ledger (or the site's cache of it) says no."""
    if decision.code == "storage_quota_exceeded":
        return _(
            "This file needs {0} bytes, but {1} of the {2} bytes of your plan's storage are in use."
        ).format(decision.requested, decision.used, decision.quota)
    if decision.code == "token_limit_exceeded":
        return _("This needs {0} AI tokens, but {1} of this month's {2} are used.").format(
            decision.requested, decision.used, decision.limit
        )
    if decision.code == "offline_limit_exceeded":
        return _(
            "The usage ledger cannot be reached, and this is more than may be used until it answers again. "
            "Please try again in a few minutes."
        )
    if decision.code == "ledger_unreachable":
        return _("The usage ledger cannot be reached, so this cannot be allowed now. Please try again later.")
    return _("Not allowed: {0}").format(decision.message or decision.code)


def before_insert(doc: Any, method: str | None = None) -> None:
    """``File`` ``before_insert``: the ledger decides the file's bytes, or the insert is refused."""
    if doc.get("is_folder"):
        return
    doc.ledger_file_id = doc.get("ledger_file_id") or f"file-{uuid.uuid4()}"
    try:
        decision = ledger().upload(doc.ledger_file_id, int(doc.get("file_size") or 0))
    except LedgerError as error:  # a rejection: nothing was recorded
        frappe.throw(_("The file could not be checked against your storage quota: {0}").format(error.detail))
    if not decision.ok:
        frappe.throw(refusal(decision), title=_("Storage quota"))
    frappe.db.after_rollback.add(functools.partial(release_file, doc.ledger_file_id))


def on_trash(doc: Any, method: str | None = None) -> None:
    """``File`` ``on_trash``: the bytes are freed once the deletion is committed."""
    file_id = doc.get("ledger_file_id")
    if file_id and not doc.get("is_folder"):
        frappe.db.after_commit.add(functools.partial(release_file, file_id))


def release_file(file_id: str) -> None:
    """Frees a file's bytes; while the ledger is unreachable, a background job does it later."""
    try:
        _delete(file_id)
    except LedgerUnavailable:
        frappe.enqueue("ledger_site.storage.release_file_job", queue="short", file_id=file_id)


def release_file_job(file_id: str) -> None:
    """The background job of :func:`release_file` (fails, to be retried, while the ledger is away)."""
    _delete(file_id)


def _delete(file_id: str) -> None:
    # NotFound: never recorded (refused when it was delivered), or freed already.
    with contextlib.suppress(NotFound):
        # The same key on every try: a release whose answer was lost is not an error.
        ledger().delete_file(file_id, idempotency_key=f"release-{file_id}")


def metered_ai(call: Callable[..., T]) -> Callable[..., T]:
    """Decorates an AI call taking ``max_tokens``: it runs only once the ledger admits them.

    Each call gets a request id of its own (the idempotency key of its token
    use, kept across the client's retries); the budget is charged before the
    model runs, so a tenant past its limit spends nothing. A denial is a
    ``frappe.throw`` with the figures.
    """

    @functools.wraps(call)
    def metered(*args: Any, max_tokens: int, **kwargs: Any) -> T:
        decision = ledger().consume_tokens(f"ai-{uuid.uuid4()}", max_tokens)
        if not decision.ok:
            frappe.throw(refusal(decision), title=_("AI tokens"))
        return call(*args, max_tokens=max_tokens, **kwargs)

    return metered
