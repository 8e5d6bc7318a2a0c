"""Fixtures: real ledgers (``ledger serve --http`` on 127.0.0.1) and fresh tenants on them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from ledger_server import CATALOG, Ledger, free_port, unique

from ledger_client import Client


@pytest.fixture(scope="session")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    """One served ledger for the online tests (each test subscribes tenants of its own)."""
    server = Ledger(tmp_path_factory.mktemp("ledger") / "data")
    server.apply(CATALOG)
    server.panel_key = server.key(None)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def panel(ledger: Ledger) -> Iterator[Client]:
    """A client with the panel key."""
    with Client(ledger.url, ledger.panel_key) as client:
        yield client


@dataclass
class Site:
    """A tenant subscribed for one test, with a user key and an admin key."""

    ledger: Ledger
    name: str
    user_key: str
    admin_key: str
    clients: list[Client] = field(default_factory=list)

    def client(self, role: str = "user", **options: Any) -> Client:
        """A client with the tenant's ``role`` key (closed after the test)."""
        key = self.user_key if role == "user" else self.admin_key
        client = Client(self.ledger.url, key, **options)
        self.clients.append(client)
        return client


@pytest.fixture
def site(ledger: Ledger, panel: Client) -> Iterator[Site]:
    """A fresh tenant on the ``small`` plan (1 GB, 10,000 tokens, blocking), 2 seats."""
    name = unique("t")
    assert panel.admin.subscribe(name, "small", 2).ok
    site = Site(ledger, name, ledger.key(name, "user"), ledger.key(name, "admin"))
    yield site
    for client in site.clients:
        client.close()


@pytest.fixture
def own_ledger(tmp_path: Path) -> Iterator[Ledger]:
    """A ledger of this test's own, on a fixed port (it may be killed and restarted).

    Tenant ``acme`` is on the ``small`` plan; ``ledger.user_key`` is its user key.
    """
    server = Ledger(tmp_path / "data", port=free_port())
    server.apply([*CATALOG, {"cmd": "subscribe", "tenant": "acme", "plan": "small", "seats": 1}])
    server.user_key = server.key("acme", "user")
    server.panel_key = server.key(None)
    yield server
    server.stop()
