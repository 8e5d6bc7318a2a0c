"""Retries keep the idempotency key: a lost answer is resent and recognized, never counted twice."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from conftest import Site
from flaky_proxy import FlakyProxy
from ledger_server import free_port

from ledger_client import Client, LedgerUnavailable


@pytest.fixture
def proxy(site: Site) -> Iterator[FlakyProxy]:
    proxy = FlakyProxy(site.ledger.url)
    yield proxy
    proxy.close()


def via(proxy: FlakyProxy, site: Site, role: str = "user", timeout: float = 5.0) -> Client:
    client = Client(proxy.url, site.user_key if role == "user" else site.admin_key, timeout=timeout)
    site.clients.append(client)
    client.me()  # asked once, before the script starts
    proxy.seen.clear()
    return client


def test_a_lost_answer_is_resent_with_the_same_request_and_recognized(site: Site, proxy: FlakyProxy) -> None:
    client = via(proxy, site)
    proxy.script = ["lose"]
    decision = client.consume_tokens("lost-1", 700)
    assert decision.ok and decision.duplicate  # the first attempt was recorded; the resend says so
    assert [s["action"] for s in proxy.seen] == ["lose", "forward"]
    assert proxy.seen[0]["body"] == proxy.seen[1]["body"] == {"request": "lost-1", "tokens": 700}
    assert site.client().usage()["tokens"]["used"] == 700  # counted once


def test_commands_without_their_own_key_resend_the_same_idempotency_key(
    site: Site, proxy: FlakyProxy
) -> None:
    client = via(proxy, site, "admin")
    proxy.script = ["lose", "503"]
    decision = client.set_seats(3)
    assert decision.ok and decision.duplicate
    keys = [s["headers"].get("idempotency-key") for s in proxy.seen]
    assert len(keys) == 3 and keys[0] and len(set(keys)) == 1, keys
    # The next call is another command: another key.
    client.set_seats(4)
    assert proxy.seen[-1]["headers"]["idempotency-key"] != keys[0]


def test_a_503_is_retried_after_retry_after(site: Site, proxy: FlakyProxy) -> None:
    client = via(proxy, site)
    proxy.script = ["503", "503"]
    decision = client.consume_tokens("busy-1", 5)
    assert decision.ok and not decision.duplicate
    assert [s["action"] for s in proxy.seen] == ["503", "503", "forward"]
    proxy.script = ["503"]
    assert client.usage()["tokens"]["used"] == 5  # views are retried too


def test_when_retries_run_out_the_outcome_may_be_unknown(site: Site, proxy: FlakyProxy) -> None:
    client = via(proxy, site, timeout=0.6)
    proxy.script = ["lose"] * 100
    started = time.monotonic()
    with pytest.raises(LedgerUnavailable) as unavailable:
        client.consume_tokens("unknown-1", 42)
    assert time.monotonic() - started < 2.0  # within the timeout (and one last attempt's answer)
    assert unavailable.value.outcome_unknown
    assert unavailable.value.code == "unavailable" and unavailable.value.status is None
    assert len(proxy.seen) >= 2 and all(
        s["body"] == {"request": "unknown-1", "tokens": 42} for s in proxy.seen
    )
    # It was recorded (once): the resend, as the error tells, is recognized.
    proxy.script = []
    assert client.consume_tokens("unknown-1", 42).duplicate
    assert site.client().usage()["tokens"]["used"] == 42


def test_503s_until_the_timeout_raise_unavailable_with_the_ledgers_code(
    site: Site, proxy: FlakyProxy
) -> None:
    client = via(proxy, site, timeout=0.5)
    proxy.script = ["503"] * 1000
    with pytest.raises(LedgerUnavailable) as unavailable:
        client.consume_tokens("busy-2", 1)
    assert unavailable.value.status == 503 and unavailable.value.outcome_unknown
    assert unavailable.value.code == "unavailable"


def test_nothing_listening_is_unavailable_and_surely_not_recorded(site: Site) -> None:
    client = Client(f"http://127.0.0.1:{free_port()}", site.user_key, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(LedgerUnavailable) as unavailable:
        client.consume_tokens("nowhere-1", 1)
    assert time.monotonic() - started < 1.5
    assert not unavailable.value.outcome_unknown
    assert unavailable.value.status is None
    assert "attempts" in unavailable.value.detail
    client.close()
