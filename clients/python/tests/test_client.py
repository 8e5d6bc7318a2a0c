"""Every call of the synchronous client against a real ledger: decisions, views, errors."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from conftest import Site
from ledger_server import GB, Ledger, unique

from ledger_client import (
    Client,
    Conflict,
    Decision,
    Forbidden,
    Invalid,
    LedgerError,
    NotFound,
    Tenant,
    TooLarge,
    Unauthorized,
)


def test_a_tenant_keys_tenant_comes_from_the_key(site: Site) -> None:
    client = site.client()
    assert client.me() == {
        "id": client.me()["id"],
        "tenant": site.name,
        "role": "user",
        "actor": f"{site.name}:user",
    }
    assert client.usage()["tenant"] == site.name


def test_consume_tokens_accepted_duplicate_denied_and_conflicting(site: Site) -> None:
    client = site.client()
    first = client.consume_tokens("req-1", 1200)
    assert first.ok and first.seq is not None and not first.duplicate and not first.offline
    again = client.consume_tokens("req-1", 1200)
    assert again == Decision(ok=True, partition=0, seq=first.seq, duplicate=True)
    denied = client.consume_tokens("req-2", 9000)
    assert not denied.ok and denied.code == "token_limit_exceeded"
    assert (denied.used, denied.limit, denied.requested) == (1200, 10000, 9000)
    assert denied.seq is None and "limit" in (denied.message or "")
    with pytest.raises(Conflict) as conflict:
        client.consume_tokens("req-1", 1300)
    assert conflict.value.code == "idempotency_conflict" and conflict.value.status == 409
    assert client.usage()["tokens"] == {"used": 1200, "limit": 10000}


def test_upload_accepted_duplicate_denied_file_exists_and_delete(site: Site) -> None:
    client = site.client()
    stored = client.upload("report.pdf", 400_000_000)
    assert stored.ok and not stored.duplicate
    assert client.upload("report.pdf", 400_000_000).duplicate
    denied = client.upload("video.mp4", GB)
    assert not denied.ok and denied.code == "storage_quota_exceeded"
    assert (denied.used, denied.quota, denied.requested) == (400_000_000, GB, GB)
    with pytest.raises(Conflict) as exists:
        client.upload("report.pdf", 1)
    assert exists.value.code == "file_exists"
    assert client.delete_file("report.pdf").ok
    with pytest.raises(NotFound) as unknown:
        client.delete_file("report.pdf")
    assert unknown.value.code == "unknown_file" and unknown.value.status == 404
    assert client.usage()["storage"]["used_bytes"] == 0


def test_admin_commands_of_a_tenant(site: Site) -> None:
    admin = site.client("admin")
    assert admin.set_seats(3).ok
    assert admin.usage()["seats"] == 3
    bought = admin.purchase_addon("extra-storage", "x1", "invoice")
    assert bought.ok and admin.purchase_addon("extra-storage", "x1", "invoice").duplicate
    assert admin.usage()["storage"]["quota_bytes"] == 2 * GB
    assert admin.purchase_addon("token-pack", "card-1", "card", quantity=2).ok
    assert {a["purchase"]: a["status"] for a in admin.usage()["addons"]} == {
        "x1": "active",
        "card-1": "pending",
    }
    assert admin.cancel_addon("x1").ok
    assert admin.set_usage_alerts(tokens=[50, 90]).ok
    assert admin.set_usage_alerts(storage=[]).ok
    with pytest.raises(Invalid) as neither:
        admin.set_usage_alerts()
    assert neither.value.code == "malformed"


def test_commands_without_a_key_of_their_own_get_one(site: Site) -> None:
    admin = site.client("admin")
    first = admin.set_seats(4, idempotency_key="seats-to-4")
    again = admin.set_seats(4, idempotency_key="seats-to-4")
    assert again.duplicate and again.seq == first.seq
    with pytest.raises(Conflict) as conflict:
        admin.set_seats(5, idempotency_key="seats-to-4")
    assert conflict.value.code == "idempotency_conflict"
    # Without one, each call is its own command (a fresh key each time).
    assert not admin.set_seats(4).duplicate


def test_batch_gives_each_item_a_key_and_answers_in_order(site: Site) -> None:
    admin = site.client("admin")
    commands = [
        {"cmd": "consume_tokens", "request": "b-1", "tokens": 100},
        {"cmd": "set_seats", "seats": 3},
        {"cmd": "consume_tokens", "request": "b-2", "tokens": 100_000},
        {"cmd": "subscribe", "plan": "small", "seats": 1},
        {"cmd": "no_such_command"},
    ]
    results = admin.batch(commands)
    assert [r.ok for r in results] == [True, True, False, False, False]
    assert results[2].code == "token_limit_exceeded" and results[2].requested == 100_000
    assert results[3].code == "forbidden" and results[4].code == "malformed"
    # The caller's dicts are left alone; a resend with explicit keys is recognized.
    assert "idempotency_key" not in commands[1]
    keyed = [{"cmd": "set_seats", "seats": 2, "idempotency_key": "batch-seats"}]
    assert not admin.batch(keyed)[0].duplicate and admin.batch(keyed)[0].duplicate


def test_views(site: Site) -> None:
    client = site.client()
    client.consume_tokens("v-1", 10)
    usage = client.usage()
    assert set(usage) == {"tenant", "plan", "seats", "status", "period", "storage", "tokens", "addons"}
    assert usage["plan"] == "small" and usage["tokens"]["used"] == 10
    # A subscription starts on a whole second: ask about the period's start.
    start = usage["period"]["start"]
    now = datetime.strptime(start, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert client.usage(at=now)["tokens"]["used"] == 10
    assert client.usage(at=start)["tenant"] == site.name
    invoice = client.invoice()
    assert invoice["status"] == "draft" and invoice["currency"] == "USD" and "explain" not in invoice
    explained = client.invoice(at=now, explain=True)
    assert explained["explain"] and explained["explain"][0]["events"]
    invoices = client.invoices()
    assert invoices["tenant"] == site.name and len(invoices["invoices"]) == 1
    with pytest.raises(NotFound) as before:
        client.usage(at="2000-01-01T00:00:00Z")
    assert before.value.code == "not_subscribed"


def test_each_error_family(site: Site, ledger: Ledger) -> None:
    user = site.client()
    with pytest.raises(Invalid) as invalid:
        user.consume_tokens("zero", 0)
    assert (invalid.value.code, invalid.value.status) == ("invalid_amount", 400)
    assert invalid.value.problem["type"] == "urn:ledger:invalid_amount"
    with pytest.raises(Forbidden) as forbidden:
        user.set_seats(2)
    assert (forbidden.value.code, forbidden.value.status) == ("forbidden", 403)
    with pytest.raises(Forbidden):
        user.tenant("someone-else").usage()
    with pytest.raises(NotFound):
        site.client("admin").purchase_addon("no-such-addon", "p-1", "invoice")
    with pytest.raises(TooLarge) as too_large:
        user.batch([{"cmd": "consume_tokens", "request": "big", "tokens": 1, "pad": "x" * (1 << 20)}])
    assert (too_large.value.code, too_large.value.status) == ("too_large", 413)
    stranger = Client(ledger.url, "lk_000000000000_notakey")
    with pytest.raises(Unauthorized) as unauthorized:
        stranger.consume_tokens("r", 1)
    assert (unauthorized.value.code, unauthorized.value.status) == ("unauthorized", 401)
    stranger.close()
    # Every rejection is a LedgerError with the ledger's words.
    assert all(
        issubclass(kind, LedgerError) for kind in (Invalid, Forbidden, NotFound, TooLarge, Unauthorized)
    )
    assert "invalid_amount" in str(invalid.value) and invalid.value.detail


def test_the_panel_key_reaches_tenants_through_tenant(site: Site, panel: Client) -> None:
    with pytest.raises(ValueError, match=r"client\.tenant"):
        panel.consume_tokens("r", 1)
    scoped = panel.tenant(site.name)
    assert isinstance(scoped, Tenant)
    assert scoped.consume_tokens("panel-1", 5).ok
    assert scoped.set_seats(3).ok
    assert scoped.usage()["tokens"]["used"] == 5


def test_panel_commands(panel: Client) -> None:
    plan = {
        "id": unique("plan"),
        "currency": "USD",
        "price": "5.00",
        "per_seat": True,
        "storage_quota_gb": "1",
        "monthly_token_limit": 100,
        "token_overage": "block",
        "addons": ["token-pack"],
    }
    assert panel.admin.define_plan(plan).ok
    with pytest.raises(Conflict) as exists:
        panel.admin.define_plan(plan)
    assert exists.value.code == "plan_exists"
    addon = {
        "id": unique("addon"),
        "currency": "USD",
        "price": "1.00",
        "recurring": True,
        "grants": {"tokens": 10},
    }
    assert panel.admin.define_addon(addon).ok
    tenant = unique("p")
    assert panel.admin.subscribe(tenant, plan["id"], 2).ok
    with pytest.raises(Conflict):
        panel.admin.subscribe(tenant, plan["id"], 2)
    assert panel.admin.change_plan(tenant, "team").ok
    scoped = panel.tenant(tenant)
    assert scoped.purchase_addon("token-pack", "card-9", "card").ok
    assert panel.admin.settle_payment(tenant, "card-9", "paid", reference="psp-1").ok
    with pytest.raises(Conflict) as settled:
        panel.admin.settle_payment(tenant, "card-9", "paid")
    assert settled.value.code == "payment_not_pending"
    with pytest.raises(Conflict) as not_ended:
        panel.admin.close_period(tenant)
    assert not_ended.value.code == "period_not_ended"
    listed = {t["tenant"]: t for t in panel.admin.tenants()}
    assert listed[tenant]["plan"] == "team" and listed[tenant]["status"] == "active"
    results = panel.admin.batch(
        [{"cmd": "set_seats", "tenant": tenant, "seats": 3}, {"cmd": "cancel", "tenant": tenant}]
    )
    assert [r.ok for r in results] == [True, True]
    assert scoped.usage()["status"] == "cancelled"
    assert scoped.invoices()["invoices"][-1]["status"] == "final"
    # Any command by name, with a key kept across a resend.
    fields = {"tenant": unique("q"), "plan": "small", "seats": 1}
    first = panel.admin.command("subscribe", fields, idempotency_key="sub-q")
    assert panel.admin.command("subscribe", fields, idempotency_key="sub-q") == Decision(
        True, partition=0, seq=first.seq, duplicate=True
    )


def test_a_tenant_key_on_panel_routes_is_forbidden(site: Site) -> None:
    with pytest.raises(Forbidden):
        site.client("admin").admin.tenants()
    with pytest.raises(Forbidden):
        site.client("admin").admin.subscribe("whoever", "small", 1)


def test_context_manager_and_repr_keep_the_key_private(site: Site) -> None:
    with Client(site.ledger.url, site.user_key) as client:
        assert client.consume_tokens("cm-1", 1).ok
        assert site.user_key not in repr(client)
