"""The fail-closed offline fallback, against a ledger killed with SIGKILL and brought back."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ledger_server import GB, Ledger

from ledger_client import Client, Conflict, Decision, LedgerUnavailable
from ledger_client._offline import PROBE_INTERVAL

WORKER = Path(__file__).with_name("worker.py")


def consumed(ledger: Ledger) -> list[tuple[str, int, str | None]]:
    """The tenant's token uses on the log, in order: (request, tokens, admitted_offline_at)."""
    uses = []
    for event in ledger.events("acme"):
        use = event["payload"].get("TokensConsumed")
        if use:
            uses.append((use["request"], use["tokens"], event["admitted_offline_at"]))
    return uses


def test_without_a_cache_an_unreachable_ledger_raises(own_ledger: Ledger) -> None:
    own_ledger.start()
    client = Client(own_ledger.url, own_ledger.user_key, timeout=0.5)
    assert client.consume_tokens("before", 1).ok
    own_ledger.kill()
    with pytest.raises(LedgerUnavailable):
        client.consume_tokens("during", 1)
    client.close()


def test_within_the_share_admitted_offline_past_it_denied_then_delivered_in_order(
    own_ledger: Ledger, tmp_path: Path
) -> None:
    own_ledger.start()
    client = Client(own_ledger.url, own_ledger.user_key, cache_dir=tmp_path / "cache", timeout=1.0)
    assert client.consume_tokens("online-1", 1000).ok  # and reads usage: the first reading
    assert client.usage()["tokens"] == {"used": 1000, "limit": 10000}
    own_ledger.kill()

    # 20% of the 9,000 tokens left is 1,800; 20% of the 1 GB left is 214,748,364 bytes.
    first = client.consume_tokens("offline-1", 1000)
    assert first == Decision(ok=True, offline=True)
    assert client.consume_tokens("offline-2", 800).offline
    past = client.consume_tokens("offline-3", 1)
    assert not past.ok and past.offline and past.code == "offline_limit_exceeded"
    assert "1800 + 1 tokens is over the offline allowance of 1800" in (past.message or "")
    assert client.consume_tokens("offline-1", 1000) == Decision(ok=True, offline=True, duplicate=True)
    with pytest.raises(Conflict) as conflict:
        client.consume_tokens("offline-1", 999)
    assert conflict.value.code == "idempotency_conflict"
    assert client.upload("scan.pdf", 200_000_000).ok
    assert client.upload("big.iso", 14_748_365).code == "offline_limit_exceeded"
    assert client.upload("small.txt", 14_748_364).ok
    with pytest.raises(Conflict) as exists:
        client.upload("scan.pdf", 1)
    assert exists.value.code == "file_exists"
    queued = client.pending_offline()
    assert [(q["cmd"], q.get("request") or q.get("file")) for q in queued] == [
        ("consume_tokens", "offline-1"),
        ("consume_tokens", "offline-2"),
        ("upload", "scan.pdf"),
        ("upload", "small.txt"),
    ]
    assert all(q["admitted_offline_at"].endswith("Z") for q in queued)

    own_ledger.start()
    time.sleep(PROBE_INTERVAL)  # the circuit breaker's pause after the last failure
    # Back: the outbox goes first (in order, with its keys and admission times),
    # then this use is decided online.
    online = client.consume_tokens("online-2", 10)
    assert online.ok and not online.offline and online.seq is not None
    assert client.pending_offline() == []
    usage = client.usage()
    assert usage["tokens"]["used"] == 1000 + 1000 + 800 + 10
    assert usage["storage"]["used_bytes"] == 200_000_000 + 14_748_364
    uses = consumed(own_ledger)
    assert [(r, t) for r, t, _ in uses] == [
        ("online-1", 1000),
        ("offline-1", 1000),
        ("offline-2", 800),
        ("online-2", 10),
    ]
    assert [at for _, _, at in uses] == [
        None,
        queued[0]["admitted_offline_at"],
        queued[1]["admitted_offline_at"],
        None,
    ]
    client.close()


def test_with_no_fresh_reading_it_is_ledger_unreachable(own_ledger: Ledger, tmp_path: Path) -> None:
    own_ledger.start()
    never_read = Client(own_ledger.url, own_ledger.user_key, cache_dir=tmp_path / "a", timeout=0.5)
    never_read.me()
    stale = Client(
        own_ledger.url, own_ledger.user_key, cache_dir=tmp_path / "b", max_staleness=0.3, timeout=0.5
    )
    stale.usage()
    own_ledger.kill()
    decision = never_read.consume_tokens("r-1", 1)
    assert not decision.ok and decision.offline and decision.code == "ledger_unreachable"
    assert "no cached quota" in (decision.message or "")
    assert never_read.upload("f-1", 1).code == "ledger_unreachable"
    time.sleep(0.5)
    old = stale.consume_tokens("r-2", 1)
    assert (old.ok, old.offline, old.code) == (False, True, "ledger_unreachable")
    assert "old or from an ended period" in (old.message or "")
    assert never_read.pending_offline() == stale.pending_offline() == []
    never_read.close()
    stale.close()


def test_after_a_failure_uses_are_decided_offline_at_once(own_ledger: Ledger, tmp_path: Path) -> None:
    own_ledger.start()
    client = Client(own_ledger.url, own_ledger.user_key, cache_dir=tmp_path / "cache", timeout=2.0)
    client.usage()
    own_ledger.kill()
    assert client.consume_tokens("first", 1).offline  # this one tried the network
    started = time.monotonic()
    for n in range(50):
        assert client.consume_tokens(f"fast-{n}", 1).offline
    assert time.monotonic() - started < 1.0, "offline decisions waited for the network"
    client.close()


def test_the_outbox_is_delivered_in_the_background_once_the_ledger_is_back(
    own_ledger: Ledger, tmp_path: Path
) -> None:
    own_ledger.start()
    client = Client(own_ledger.url, own_ledger.user_key, cache_dir=tmp_path / "cache", timeout=0.5)
    client.usage()
    own_ledger.kill()
    assert client.consume_tokens("bg-1", 100).offline
    assert client.upload("bg.txt", 1000).offline
    own_ledger.start()
    deadline = time.monotonic() + 10
    while client.pending_offline() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.pending_offline() == []
    assert [(r, t) for r, t, _ in consumed(own_ledger)] == [("bg-1", 100)]
    client.close()


def run_workers(ledger: Ledger, cache: Path, *args: list[str]) -> list[dict[str, object]]:
    """Runs ``worker.py`` once per ``args``, started together; their answers."""
    barrier = cache.parent / f"go-{time.monotonic_ns()}"
    processes = [
        subprocess.Popen(
            [sys.executable, str(WORKER), ledger.url, ledger.user_key, str(cache), str(barrier), *a],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for a in args
    ]
    deadline = time.monotonic() + 60
    while len(list(cache.parent.glob(f"{barrier.name}.*"))) < len(processes) and time.monotonic() < deadline:
        time.sleep(0.01)
    barrier.touch()
    answers = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        answers.append(json.loads(out))
    return answers


def test_three_processes_share_one_cache_never_exceed_the_share_and_deliver_once_in_order(
    own_ledger: Ledger, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    own_ledger.start()
    site = Client(own_ledger.url, own_ledger.user_key, cache_dir=cache)
    assert site.consume_tokens("seed", 2000).ok
    assert site.usage()["tokens"]["used"] == 2000  # the reading the workers will share
    own_ledger.kill()
    # The first use finds the ledger gone (and opens the circuit for all the processes).
    assert site.consume_tokens("trip", 37).offline
    site.close()

    # 20% of the 8,000 left: 1,600 tokens, for the four processes together.
    answers = run_workers(own_ledger, cache, *[["consume", f"w{i}", "3"] for i in range(3)])
    admitted = ["trip", *(r for a in answers for r in a["admitted"])]  # type: ignore[attr-defined]
    assert all(a["denied"] == "offline_limit_exceeded" for a in answers)
    total = 37 + 3 * (len(admitted) - 1)
    assert 1600 - 3 < total <= 1600
    assert all(a["admitted"] for a in answers), [{**a, "admitted": len(a["admitted"])} for a in answers]

    with Client(own_ledger.url, own_ledger.user_key, cache_dir=cache) as reader:
        queued = [q["request"] for q in reader.pending_offline()]
    assert sorted(queued) == sorted(admitted)

    own_ledger.start()
    delivered = run_workers(own_ledger, cache, *[["deliver"] for _ in range(3)])
    # Whichever reached the ledger first delivered (a call, or the background
    # delivery each client starts when it finds the outbox full): all of it, once.
    assert sum(d["delivered"] for d in delivered) <= len(admitted)  # type: ignore[misc]
    assert all(d["pending"] == 0 for d in delivered)
    with Client(own_ledger.url, own_ledger.user_key, cache_dir=cache) as site:
        assert site.usage()["tokens"]["used"] == 2000 + total
    uses = consumed(own_ledger)
    assert [r for r, _, _ in uses] == ["seed", *queued]  # once each, in admission order
    assert all(at is not None for _, _, at in uses[1:])


def test_uses_the_ledger_refuses_on_delivery_go_to_the_refused_list(
    own_ledger: Ledger, tmp_path: Path
) -> None:
    own_ledger.start()
    # Two machines, each allowed the whole remainder offline: together past the limit.
    a = Client(own_ledger.url, own_ledger.user_key, cache_dir=tmp_path / "a", offline_share=1.0, timeout=0.5)
    b = Client(own_ledger.url, own_ledger.user_key, cache_dir=tmp_path / "b", offline_share=1.0, timeout=0.5)
    a.usage()
    b.usage()
    own_ledger.kill()
    for n in range(10):
        assert a.consume_tokens(f"a-{n}", 1000).offline
        assert b.consume_tokens(f"b-{n}", 1000).offline
    assert a.consume_tokens("a-past", 1).code == "offline_limit_exceeded"
    own_ledger.start()
    assert a.deliver_outbox() == 10
    assert b.deliver_outbox() == 10
    # The ledger records uses admitted offline up to 10% past the limit, no further.
    assert a.usage()["tokens"] == {"used": 11000, "limit": 10000}
    refused = b.refused_offline()
    assert [r["command"]["request"] for r in refused] == [f"b-{n}" for n in range(1, 10)]
    assert {r["answer"]["code"] for r in refused} == {"token_limit_exceeded"}
    assert a.refused_offline() == [] or a.refused_offline() == refused  # one list per cache
    b.forget_refused()
    assert b.refused_offline() == []
    a.close()
    b.close()


def test_storage_offline_counts_uploads_and_the_reading_follows_online_uses(
    own_ledger: Ledger, tmp_path: Path
) -> None:
    own_ledger.start()
    client = Client(own_ledger.url, own_ledger.user_key, cache_dir=tmp_path / "cache", timeout=0.5)
    assert client.upload("a.bin", GB // 2).ok  # online; the reading follows it
    own_ledger.kill()
    # 20% of the half GB left.
    allowance = (GB - GB // 2) // 5
    assert client.upload("b.bin", allowance).offline
    assert client.upload("c.bin", 1).code == "offline_limit_exceeded"
    client.close()
