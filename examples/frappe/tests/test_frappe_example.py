"""The Frappe example's hooks against a real ``ledger serve``, with a stand-in ``frappe`` module."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent
sys.path[:0] = [
    str(HERE / "frappe_stub"),
    str(EXAMPLE / "ledger_site"),
    str(EXAMPLE / "ledger_panel"),
    str(EXAMPLE.parents[1] / "clients" / "python" / "tests"),
]

import frappe
import pytest
from ledger_client import Client
from ledger_client._offline import PROBE_INTERVAL
from ledger_server import CATALOG, GB, Ledger, free_port
from webhook_receiver import Receiver

from ledger_panel import webhooks
from ledger_site import storage


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Ledger]:
    """A ledger with tenant ``acme`` (1 GB, 10,000 tokens), and a site configured for it."""
    frappe.reset()
    ledger = Ledger(tmp_path / "data", port=free_port())
    ledger.apply([*CATALOG, {"cmd": "subscribe", "tenant": "acme", "plan": "small", "seats": 1}])
    ledger.user_key = ledger.key("acme", "user")
    ledger.panel_key = ledger.key(None)
    ledger.start()
    frappe.conf.update(
        ledger_url=ledger.url, ledger_key=ledger.user_key, ledger_cache_dir=str(tmp_path / "cache")
    )
    yield ledger
    for client in storage._clients.values():
        client.close()
    storage._clients.clear()
    ledger.stop()


def new_file(name: str, size: int) -> frappe._dict:
    """A ``File`` document as Frappe has it in ``before_insert``: no ``name`` yet."""
    return frappe._dict(doctype="File", file_name=name, file_size=size, is_folder=0)


def used_bytes(ledger: Ledger) -> int:
    with Client(ledger.url, ledger.user_key) as client:
        return int(client.usage()["storage"]["used_bytes"])


def test_an_insert_within_the_quota_is_recorded_under_an_id_of_our_own(site: Ledger) -> None:
    doc = new_file("report.pdf", 300_000_000)
    storage.before_insert(doc, "before_insert")
    assert doc.ledger_file_id.startswith("file-") and doc.get("name") is None
    frappe.db.commit()
    assert used_bytes(site) == 300_000_000
    stored = [e["payload"]["FileStored"] for e in site.events("acme") if e["kind"] == "file_stored"]
    assert stored == [{"bytes": 300_000_000, "file": doc.ledger_file_id, "offline": False}] or stored[0][
        "file"
    ] == (doc.ledger_file_id)


def test_an_insert_past_the_quota_is_refused_with_a_clear_message(site: Ledger) -> None:
    with pytest.raises(frappe.ValidationError, match="storage") as refused:
        storage.before_insert(new_file("video.mp4", GB + 1))
    assert f"needs {GB + 1} bytes" in str(refused.value)
    assert used_bytes(site) == 0


def test_an_insert_rolled_back_after_the_ledger_admitted_it_gives_the_bytes_back(site: Ledger) -> None:
    kept = new_file("kept.txt", 1000)
    storage.before_insert(kept)
    frappe.db.commit()
    doc = new_file("draft.docx", 500_000)
    storage.before_insert(doc)
    assert used_bytes(site) == 501_000
    frappe.db.rollback()  # a later hook failed: the row never existed
    assert used_bytes(site) == 1000


def test_a_trashed_file_is_freed_when_the_deletion_commits_not_when_it_rolls_back(site: Ledger) -> None:
    doc = new_file("old.zip", 70_000)
    storage.before_insert(doc)
    frappe.db.commit()
    storage.on_trash(doc)
    frappe.db.rollback()  # the deletion did not happen
    assert used_bytes(site) == 70_000
    storage.on_trash(doc)
    frappe.db.commit()
    assert used_bytes(site) == 0
    storage.on_trash(doc)  # trashed again (already freed): nothing to do, no error
    frappe.db.commit()


def test_while_the_ledger_is_down_uploads_are_decided_from_the_cache_and_released_later(site: Ledger) -> None:
    storage.ledger().usage()  # the site's last reading: 1 GB free
    site.kill()
    small = new_file("offline.txt", 100_000_000)
    storage.before_insert(small)  # within 20% of what remained: admitted offline
    frappe.db.commit()
    with pytest.raises(frappe.ValidationError, match="cannot be reached"):
        storage.before_insert(new_file("huge.iso", 200_000_000))
    frappe.db.rollback()
    # Deleting while the ledger is away: the release waits in a background job.
    storage.on_trash(small)
    frappe.db.commit()
    assert frappe.enqueued == [("ledger_site.storage.release_file_job", {"file_id": small.ledger_file_id})]
    site.start()
    time.sleep(PROBE_INTERVAL)
    _, kwargs = frappe.enqueued.pop()
    storage.release_file_job(**kwargs)  # the worker runs it: the upload lands first, then the delete
    assert used_bytes(site) == 0
    kinds = [e["kind"] for e in site.events("acme") if e["kind"].startswith("file_")]
    assert kinds == ["file_stored", "file_deleted"]


def test_ai_calls_run_only_once_their_tokens_are_admitted_each_under_its_own_request(site: Ledger) -> None:
    calls: list[str] = []

    @storage.metered_ai
    def complete(prompt: str, *, max_tokens: int) -> str:
        calls.append(prompt)
        return f"answer to {prompt}"

    assert complete("first", max_tokens=4000) == "answer to first"
    assert complete("second", max_tokens=4000) == "answer to second"
    with pytest.raises(frappe.ValidationError, match="AI tokens") as refused:
        complete("third", max_tokens=4000)
    assert "8000 of this month's 10000 are used" in str(refused.value)
    assert calls == ["first", "second"]  # the third never reached the model
    requests = [
        e["payload"]["TokensConsumed"]["request"]
        for e in site.events("acme")
        if e["kind"] == "tokens_consumed"
    ]
    assert len(requests) == 2 and len(set(requests)) == 2 and all(r.startswith("ai-") for r in requests)


class Request:
    """``frappe.request`` for one delivery: the raw body and the headers."""

    def __init__(self, body: bytes, headers: dict[str, str]) -> None:
        self.body, self.headers = body, headers

    def get_data(self) -> bytes:
        return self.body


def test_the_panels_endpoint_verifies_deliveries_and_marks_invoices_for_collection(tmp_path: Path) -> None:
    frappe.reset()

    def deliver_to_frappe(request: dict[str, Any]) -> tuple[int, bytes]:
        """What Frappe does with POST /api/method/ledger_panel.webhooks.receive."""
        frappe.request = Request(request["body"], request["headers"])
        try:
            return 200, json.dumps({"message": webhooks.receive()}).encode()
        except frappe.AuthenticationError:
            return 401, b""

    receiver = Receiver(deliver_to_frappe)
    ledger = Ledger(tmp_path / "data", port=free_port())
    ledger.apply([*CATALOG, {"cmd": "subscribe", "tenant": "acme", "plan": "small", "seats": 1}])
    url = f"{receiver.url}/api/method/ledger_panel.webhooks.receive"
    endpoint = json.loads(
        ledger.cli("webhooks", "add", url, "--types", "invoice.finalized", "--retries", "1s,1s")
    )
    frappe.conf["ledger_webhook_secret"] = endpoint["secret"]
    panel_key = ledger.key(None)
    ledger.start()
    try:
        assert webhooks.receive.__name__ in frappe.whitelisted
        assert frappe.whitelisted["receive"]["allow_guest"] is True
        with Client(ledger.url, panel_key) as panel:
            assert panel.tenant("acme").purchase_addon("token-pack", "pack-1", "invoice").ok  # 10.00 due
            assert panel.admin.cancel("acme").ok  # finalizes acme's invoice: invoice.finalized
        received = receiver.wait_for(lambda r: any(d["status"] == 200 for d in r))
        assert [d["status"] for d in received] == [200]
        (name,) = [name for doctype, name in frappe.db.docs if doctype == "Ledger Invoice"]
        invoice = frappe.db.docs[("Ledger Invoice", name)]
        assert name.startswith("acme:") and invoice["collection_status"] == "To Collect"
        assert invoice["amount_due"] == json.loads(invoice["invoice"])["amount_due"] != "0.00"
        # At least once: the same delivery again changes nothing.
        assert deliver_to_frappe(received[0])[0] == 200
        assert len(frappe.db.docs) == 1
        # A forged or altered delivery is refused (401: the ledger would retry it).
        forged = dict(received[0], body=received[0]["body"].replace(b'"acme"', b'"evil"'))
        assert deliver_to_frappe(forged)[0] == 401
        assert len(frappe.db.docs) == 1
    finally:
        ledger.stop()
        receiver.close()
