"""A worker process of a tenant site, for the tests that share one cache between processes.

    python worker.py URL KEY CACHE_DIR consume NAME TOKENS   # consume until denied
    python worker.py URL KEY CACHE_DIR deliver               # deliver the outbox

Prints one JSON object: what it was told.
"""

from __future__ import annotations

import json
import sys
import time

from ledger_client import Client


def main() -> None:
    url, key, cache_dir, mode, *rest = sys.argv[1:]
    client = Client(url, key, cache_dir=cache_dir, timeout=2.0)
    if mode == "consume":
        name, tokens = rest[0], int(rest[1])
        admitted, denied = [], None
        # Start together: the three processes race for the same allowance.
        start = float(rest[2]) if len(rest) > 2 else 0.0
        time.sleep(max(0.0, start - time.time()))
        for n in range(10_000):
            decision = client.consume_tokens(f"{name}-{n}", tokens)
            if not decision.ok:
                denied = decision.code
                break
            assert decision.offline, decision
            admitted.append(f"{name}-{n}")
        print(json.dumps({"admitted": admitted, "denied": denied}))
    elif mode == "deliver":
        start = float(rest[0]) if rest else 0.0
        time.sleep(max(0.0, start - time.time()))
        delivered = client.deliver_outbox()
        print(json.dumps({"delivered": delivered, "pending": len(client.pending_offline())}))
    client.close()


if __name__ == "__main__":
    main()
