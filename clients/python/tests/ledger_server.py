"""A real ``ledger serve --http`` for the tests: started, killed, restarted.

Builds nothing: the binary is ``$LEDGER_BIN`` (``scripts/test`` sets it to the
cargo-built ``target/debug/ledger``). Every server listens on 127.0.0.1 only
and delivers webhooks only to 127.0.0.1.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[3]

# A catalog for the tests: a small blocking plan, a per-seat plan that bills
# overage, a plan no test reaches the limit of (the bench), and two add-ons.
CATALOG = [
    {
        "cmd": "define_addon",
        "addon": {
            "id": "extra-storage",
            "name": "Extra storage 1 GB",
            "currency": "USD",
            "price": "3.00",
            "recurring": True,
            "grants": {"storage_gb": "1"},
        },
    },
    {
        "cmd": "define_addon",
        "addon": {
            "id": "token-pack",
            "name": "Token pack",
            "currency": "USD",
            "price": "10.00",
            "recurring": False,
            "grants": {"tokens": 5000},
        },
    },
    {
        "cmd": "define_plan",
        "plan": {
            "id": "small",
            "name": "Small",
            "currency": "USD",
            "price": "20.00",
            "per_seat": False,
            "storage_quota_gb": "1",
            "monthly_token_limit": 10000,
            "token_overage": "block",
            "addons": ["extra-storage", "token-pack"],
        },
    },
    {
        "cmd": "define_plan",
        "plan": {
            "id": "team",
            "name": "Team",
            "currency": "USD",
            "price": "8.00",
            "per_seat": True,
            "min_seats": 1,
            "max_seats": 10,
            "storage_quota_gb": "10",
            "monthly_token_limit": 50000,
            "token_overage": {"bill_per_1k": "0.02"},
            "addons": ["extra-storage", "token-pack"],
        },
    },
    {
        "cmd": "define_plan",
        "plan": {
            "id": "unlimited",
            "name": "Unlimited",
            "currency": "USD",
            "price": "100.00",
            "per_seat": False,
            "storage_quota_gb": "1000",
            "monthly_token_limit": 1000000000000,
            "token_overage": "block",
            "addons": [],
        },
    },
]

GB = 1 << 30


def binary() -> Path:
    """The ledger binary the tests run."""
    path = Path(os.environ.get("LEDGER_BIN") or REPO / "target/debug/ledger")
    if not path.is_file():
        raise RuntimeError(
            f"no ledger binary at {path}: set LEDGER_BIN (scripts/test does) or run cargo build"
        )
    return path


def free_port() -> int:
    """A port nothing listens on now (for a server that must come back on the same one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_names = itertools.count(1)


def unique(prefix: str) -> str:
    """A name no other test of this run uses."""
    return f"{prefix}-{os.getpid()}-{next(_names)}"


class Ledger:
    """One data directory and the ``ledger serve --http`` process serving it."""

    def __init__(self, data: Path, *, port: int = 0) -> None:
        self.bin = binary()
        self.data = data
        self.data.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self.log = data.parent / f"{data.name}-serve.log"
        self.url = ""
        # Keys the fixtures make (the panel's, a tenant user's).
        self.panel_key = ""
        self.user_key = ""

    def cli(self, *args: str, input: str | None = None) -> str:
        """Runs ``ledger --data DATA ARGS``; its stdout (fails on a non-zero exit)."""
        out = subprocess.run(
            [str(self.bin), "--data", str(self.data), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
            env={k: v for k, v in os.environ.items() if k not in ("LEDGER_NATS", "LEDGER_DATA")},
        )
        if out.returncode != 0:
            raise RuntimeError(f"ledger {' '.join(args)} exited {out.returncode}: {out.stderr}")
        return out.stdout

    def apply(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``ledger apply -`` (before ``serve`` holds the directory)."""
        text = "".join(json.dumps(c) + "\n" for c in commands)
        return [json.loads(line) for line in self.cli("apply", "-", input=text).splitlines()]

    def key(self, tenant: str | None, role: str = "user") -> str:
        """A new API key: the tenant's ``role``, or the panel's (``tenant=None``)."""
        args = ["keys", "add", "--panel"] if tenant is None else ["keys", "add", tenant, role]
        return self.cli(*args).strip()

    def events(self, tenant: str) -> list[dict[str, Any]]:
        """The tenant's decoded log (through the running serve's socket)."""
        return [json.loads(line) for line in self.cli("events", "--tenant", tenant, "--json").splitlines()]

    def start(self) -> Ledger:
        """Starts ``serve`` (on the same port as before, when it ran already)."""
        assert self.process is None, "already serving"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(self.bin),
                    "--data",
                    str(self.data),
                    "serve",
                    "--http",
                    f"127.0.0.1:{self.port}",
                    "--webhook-allow-hosts",
                    "127.0.0.1",
                    "--clock-interval-ms",
                    "3600000",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env={
                    **{k: v for k, v in os.environ.items() if k not in ("LEDGER_NATS", "LEDGER_DATA")},
                    "LEDGER_LOG": "info",
                },
            )
        started = self.log.stat().st_size if self.log.exists() else 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ledger serve exited {self.process.returncode}:\n{self.log.read_text()}")
            text = self.log.read_bytes()[started:].decode(errors="replace")
            found = re.search(r"serving ledger HTTP on (http://127\.0\.0\.1:(\d+))", text)
            if found:
                self.url, self.port = found.group(1), int(found.group(2))
                break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"ledger serve did not start:\n{self.log.read_text()}")
        self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 30) -> None:
        """Until ``/healthz`` answers 200."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"ledger serve is not healthy:\n{self.log.read_text()}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no goodbye, no flush."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)
            self.process = None

    def stop(self) -> None:
        """SIGTERM, and wait."""
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def restart(self) -> Ledger:
        """Serves the same directory on the same port again."""
        self.stop()
        return self.start()
