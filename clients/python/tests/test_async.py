"""The asynchronous client: the same calls, answers and rules, as coroutines."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conftest import Site
from flaky_proxy import FlakyProxy
from ledger_server import Ledger, unique

from ledger_client import (
    AsyncClient,
    AsyncTenant,
    Client,
    Conflict,
    Decision,
    Forbidden,
    Invalid,
    LedgerUnavailable,
    NotFound,
)
from ledger_client._offline import PROBE_INTERVAL


def test_every_tenant_call(site: Site) -> None:
    async def main() -> None:
        async with AsyncClient(site.ledger.url, site.admin_key) as client:
            assert (await client.me())["tenant"] == site.name
            first = await client.consume_tokens("a-1", 100)
            assert first.ok and not first.duplicate
            assert (await client.consume_tokens("a-1", 100)).duplicate
            denied = await client.consume_tokens("a-2", 20_000)
            assert (denied.ok, denied.code, denied.used, denied.limit) == (
                False,
                "token_limit_exceeded",
                100,
                10000,
            )
            assert (await client.upload("f.txt", 10)).ok
            assert (await client.delete_file("f.txt")).ok
            assert (await client.purchase_addon("extra-storage", "x1", "invoice", quantity=2)).ok
            assert (await client.cancel_addon("x1")).ok
            assert (await client.set_seats(3)).ok
            assert (await client.set_usage_alerts(tokens=[10], storage=[20])).ok
            results = await client.batch([{"cmd": "consume_tokens", "request": "a-3", "tokens": 1}])
            assert results == [Decision(ok=True, partition=0, seq=results[0].seq)]
            usage = await client.usage()
            assert usage["seats"] == 3 and usage["tokens"]["used"] == 101
            assert (await client.invoice(explain=True))["explain"]
            assert len((await client.invoices())["invoices"]) == 1
            with pytest.raises(Conflict):
                await client.consume_tokens("a-1", 5)
            with pytest.raises(Invalid):
                await client.set_seats(0)
            with pytest.raises(NotFound):
                await client.delete_file("nothing")
            with pytest.raises(Forbidden):
                await client.tenant("someone-else").usage()

    asyncio.run(main())


def test_panel_calls_and_tenant_scopes(ledger: Ledger) -> None:
    async def main() -> None:
        async with AsyncClient(ledger.url, ledger.panel_key) as panel:
            tenant = unique("as")
            assert (await panel.admin.subscribe(tenant, "team", 2)).ok
            scoped = panel.tenant(tenant)
            assert isinstance(scoped, AsyncTenant)
            assert (await scoped.purchase_addon("token-pack", "c-1", "card")).ok
            assert (await panel.admin.settle_payment(tenant, "c-1", "failed")).ok
            assert (await panel.admin.change_plan(tenant, "small")).ok
            with pytest.raises(Conflict):
                await panel.admin.close_period(tenant)
            assert tenant in {t["tenant"] for t in await panel.admin.tenants()}
            results = await panel.admin.batch([{"cmd": "set_seats", "tenant": tenant, "seats": 1}])
            assert results[0].ok
            assert (await panel.admin.cancel(tenant)).ok
            with pytest.raises(ValueError, match=r"client\.tenant"):
                await panel.consume_tokens("r", 1)

    asyncio.run(main())


def test_a_lost_answer_is_resent_and_recognized(site: Site) -> None:
    proxy = FlakyProxy(site.ledger.url)

    async def main() -> None:
        async with AsyncClient(proxy.url, site.user_key) as client:
            await client.me()
            proxy.script = ["lose", "503"]
            decision = await client.consume_tokens("lost-async", 9)
            assert decision.ok and decision.duplicate
            assert len(proxy.seen) == 4  # /v1/me, then three attempts
            proxy.script = ["lose"] * 100
            client_fast = AsyncClient(proxy.url, site.user_key, timeout=0.4)
            with pytest.raises(LedgerUnavailable) as unavailable:
                await client_fast.consume_tokens("lost-async-2", 1)
            assert unavailable.value.outcome_unknown
            await client_fast.aclose()

    try:
        asyncio.run(main())
    finally:
        proxy.close()


def test_concurrent_calls_share_one_client(site: Site) -> None:
    async def main() -> None:
        async with AsyncClient(site.ledger.url, site.user_key) as client:
            decisions = await asyncio.gather(*(client.consume_tokens(f"c-{n}", 10) for n in range(50)))
            assert all(d.ok for d in decisions)
            assert len({d.seq for d in decisions}) == 50
            assert (await client.usage())["tokens"]["used"] == 500

    asyncio.run(main())


def test_offline_fallback_and_delivery(own_ledger: Ledger, tmp_path: Path) -> None:
    own_ledger.start()

    async def offline() -> None:
        async with AsyncClient(
            own_ledger.url, own_ledger.user_key, cache_dir=tmp_path, timeout=0.5
        ) as client:
            await client.usage()
            own_ledger.kill()
            # 20% of the 10,000 tokens left.
            decisions = await asyncio.gather(*(client.consume_tokens(f"o-{n}", 300) for n in range(8)))
            assert sum(d.ok for d in decisions) == 6
            assert all(d.offline for d in decisions)
            assert {d.code for d in decisions if not d.ok} == {"offline_limit_exceeded"}
            assert len(client.pending_offline()) == 6

    asyncio.run(offline())

    # A sync client on the same cache sees the same outbox; an async one delivers it.
    with Client(own_ledger.url, own_ledger.user_key, cache_dir=tmp_path) as sync:
        queued = [q["request"] for q in sync.pending_offline()]
    assert len(queued) == 6
    own_ledger.start()

    async def back() -> None:
        async with AsyncClient(own_ledger.url, own_ledger.user_key, cache_dir=tmp_path) as client:
            await asyncio.sleep(PROBE_INTERVAL)
            assert await client.deliver_outbox() in (0, 6)  # 0: the background task was first
            assert client.pending_offline() == []
            assert (await client.usage())["tokens"]["used"] == 1800
            decision = await client.consume_tokens("online", 1)
            assert decision.ok and not decision.offline

    asyncio.run(back())
    requests = [
        e["payload"]["TokensConsumed"]["request"]
        for e in own_ledger.events("acme")
        if e["kind"] == "tokens_consumed"
    ]
    assert requests == [*queued, "online"]
