"""A worker process of a tenant site, for the tests that share one cache between processes.

    python worker.py URL KEY CACHE_DIR BARRIER consume NAME TOKENS   # consume until denied
    python worker.py URL KEY CACHE_DIR BARRIER deliver               # deliver the outbox

Each makes its client, creates ``BARRIER.<pid>``, waits for ``BARRIER`` to
exist (so the workers start together, however long each took to start), then
prints one JSON object: what it was told.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from ledger_client import Client


def main() -> None:
    url, key, cache_dir, barrier, mode, *rest = sys.argv[1:]
    client = Client(url, key, cache_dir=cache_dir, timeout=2.0)
    Path(f"{barrier}.{os.getpid()}").touch()
    while not Path(barrier).exists():
        time.sleep(0.001)
    if mode == "consume":
        name, tokens = rest[0], int(rest[1])
        admitted, denied, slowest = [], None, 0.0
        for n in range(100_000):
            began = time.monotonic()
            decision = client.consume_tokens(f"{name}-{n}", tokens)
            slowest = max(slowest, time.monotonic() - began)
            if not decision.ok:
                denied = decision.code
                break
            assert decision.offline, decision
            admitted.append(f"{name}-{n}")
        print(json.dumps({"admitted": admitted, "denied": denied, "slowest": slowest}))
    elif mode == "deliver":
        delivered = client.deliver_outbox()
        print(json.dumps({"delivered": delivered, "pending": len(client.pending_offline())}))
    client.close()


if __name__ == "__main__":
    main()
