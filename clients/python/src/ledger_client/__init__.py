"""``ledger_client``: the subscription ledger's HTTP API for Python.

The same guarantees as the Rust client (``client/`` in the ledger's
repository): typed decisions, one idempotency key per command kept across
retries, and, with a ``cache_dir``, a fail-closed offline fallback for
``upload`` and ``consume_tokens`` shared by the worker processes of a machine.

>>> from ledger_client import Client
>>> acme = Client("http://127.0.0.1:8080", "lk_...", cache_dir="/var/cache/ledger")  # doctest: +SKIP
>>> acme.consume_tokens("req-42", 1200)  # doctest: +SKIP
Decision(ok=True, code=None, partition=0, seq=17, duplicate=False, offline=False, ...)
"""

from ._async import AsyncAdmin, AsyncClient, AsyncTenant, AsyncWebhooks
from ._decision import Decision
from ._errors import (
    Conflict,
    Forbidden,
    Invalid,
    LedgerError,
    LedgerUnavailable,
    NotFound,
    TooLarge,
    Unauthorized,
)
from ._sync import Admin, Client, Tenant, Webhooks
from ._version import __version__

__all__ = [
    "Admin",
    "AsyncAdmin",
    "AsyncClient",
    "AsyncTenant",
    "AsyncWebhooks",
    "Client",
    "Conflict",
    "Decision",
    "Forbidden",
    "Invalid",
    "LedgerError",
    "LedgerUnavailable",
    "NotFound",
    "Tenant",
    "TooLarge",
    "Unauthorized",
    "Webhooks",
    "__version__",
]
