"""The Python client's cost, in one run against a real ``ledger serve --http``.

    LEDGER_BIN=target/debug/ledger python clients/python/bench.py [--calls 2000] [--offline 3000]

1. Online, one client: the p50 of ``Client.consume_tokens`` against a bare
   ``httpx`` POST of the same body to the same server (and the answer's JSON
   read), without ``cache_dir`` (target: within 1.3x) and with it (within
   1.6x). The three are measured in interleaved rounds, so a drift of the
   machine touches them alike.
2. Offline, one process: the ledger killed with SIGKILL, decisions per second
   from the cache, each on disk in the outbox (fsync) before its answer
   (target: at least 1,000/s).

Prints a table and, last, one JSON line with the figures. The ledger listens
on 127.0.0.1 only; nothing else is contacted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
from ledger_client import Client

ROOT = Path(__file__).resolve().parents[2]
PLAN = {
    "cmd": "define_plan",
    "plan": {
        "id": "bench",
        "currency": "USD",
        "price": "1.00",
        "per_seat": False,
        "storage_quota_gb": "1000",
        "monthly_token_limit": 1_000_000_000_000,
        "token_overage": "block",
        "addons": [],
    },
}


def ledger_binary() -> Path:
    """``$LEDGER_BIN``, else the release build, else the debug build."""
    for candidate in (
        os.environ.get("LEDGER_BIN"),
        ROOT / "target/release/ledger",
        ROOT / "target/debug/ledger",
    ):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    sys.exit("no ledger binary: build it (cargo build) or set LEDGER_BIN")


def run(binary: Path, data: Path, *args: str, stdin: str | None = None) -> str:
    return subprocess.run(
        [str(binary), "--data", str(data), *args], input=stdin, capture_output=True, text=True, check=True
    ).stdout


def serve(binary: Path, data: Path) -> tuple[subprocess.Popen[bytes], str]:
    log = data.parent / "serve.log"
    process = subprocess.Popen(
        [
            str(binary),
            "--data",
            str(data),
            "serve",
            "--http",
            "127.0.0.1:0",
            "--clock-interval-ms",
            "3600000",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = re.search(
            r"serving ledger HTTP on (http://127\.0\.0\.1:\d+)", log.read_text(errors="replace")
        )
        if found:
            url = found.group(1)
            while httpx.get(f"{url}/healthz").status_code != 200:
                time.sleep(0.05)
            return process, url
        time.sleep(0.05)
    sys.exit(f"ledger serve did not start:\n{log.read_text()}")


def p50(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6  # microseconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000, help="online calls of each kind (default 2000)")
    parser.add_argument("--offline", type=int, default=3000, help="offline decisions (default 3000)")
    args = parser.parse_args()
    binary = ledger_binary()
    work = Path(tempfile.mkdtemp(prefix="ledger-client-bench-"))
    data = work / "data"
    data.mkdir()
    subscribe = {"cmd": "subscribe", "tenant": "bench", "plan": "bench", "seats": 1}
    run(binary, data, "apply", "-", stdin=json.dumps(PLAN) + "\n" + json.dumps(subscribe) + "\n")
    key = run(binary, data, "keys", "add", "bench", "user").strip()
    process, url = serve(binary, data)
    try:
        bare = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=5.0)
        plain = Client(url, key)
        cached = Client(url, key, cache_dir=work / "cache", offline_share=1.0)
        path = "/v1/tenants/bench/consume_tokens"

        def bare_call(request: str) -> None:
            answer = bare.post(path, json={"request": request, "tokens": 1})
            assert answer.status_code == 200, answer.text
            assert answer.json()["ok"], answer.text

        def plain_call(request: str) -> None:
            assert plain.consume_tokens(request, 1).ok

        def cached_call(request: str) -> None:
            decision = cached.consume_tokens(request, 1)
            assert decision.ok, decision
            assert not decision.offline, decision

        kinds = {"bare httpx POST": bare_call, "Client": plain_call, "Client, cache_dir": cached_call}
        samples: dict[str, list[float]] = {name: [] for name in kinds}
        for k, call in enumerate(kinds.values()):  # warm up: connections, the cache's first reading
            for n in range(100):
                call(f"warm-{k}-{n}")
        rounds, counter = 20, 0
        for _ in range(rounds):
            for name, call in kinds.items():
                for _ in range(args.calls // rounds):
                    counter += 1
                    began = time.perf_counter()
                    call(f"r-{counter}")
                    samples[name].append(time.perf_counter() - began)
        base = p50(samples["bare httpx POST"])
        figures = {name: p50(s) for name, s in samples.items()}
        print(f"ledger: {binary} (on 127.0.0.1); {len(samples['Client'])} calls of each kind")
        print(f"{'online, one client':<24} {'p50 (us)':>10} {'ratio':>7}  target")
        targets = {"Client": 1.3, "Client, cache_dir": 1.6}
        for name, value in figures.items():
            target = f"<= {targets[name]}x" if name in targets else ""
            print(f"{name:<24} {value:>10.0f} {value / base:>6.2f}x  {target}")

        # Offline: the ledger gone; every decision from the cache, durable first.
        cached.usage()
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert cached.consume_tokens("trip", 1).offline  # finds the ledger gone
        began = time.perf_counter()
        for n in range(args.offline):
            decision = cached.consume_tokens(f"off-{n}", 1)
            assert decision.ok, decision
            assert decision.offline, decision
        elapsed = time.perf_counter() - began
        per_second = args.offline / elapsed
        print(f"offline, one process: {per_second:,.0f} decisions/s ({args.offline} in {elapsed:.2f}s)")
        print("  target >= 1,000/s; each on disk in the outbox before its answer")
        assert len(cached.pending_offline()) == args.offline + 1
        result = {
            "bare_p50_us": round(base),
            "client_p50_us": round(figures["Client"]),
            "client_cache_p50_us": round(figures["Client, cache_dir"]),
            "client_ratio": round(figures["Client"] / base, 3),
            "client_cache_ratio": round(figures["Client, cache_dir"] / base, 3),
            "offline_per_second": round(per_second),
            "targets_met": {
                "client <= 1.3x": figures["Client"] / base <= 1.3,
                "client with cache <= 1.6x": figures["Client, cache_dir"] / base <= 1.6,
                "offline >= 1000/s": per_second >= 1000,
            },
        }
        print(json.dumps(result))
        for client in (plain, cached):
            client.close()
        bare.close()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


if __name__ == "__main__":
    main()
