"""The fail-closed offline fallback's local state, shared by the processes of one machine.

One SQLite database in ``cache_dir`` (WAL mode) holds, per tenant, the last
usage read from the ledger (the *reading*) and what was admitted offline
against it, the *outbox* of uses admitted offline (in admission order, with
their keys and ``admitted_offline_at``), the *refused* list (uses admitted
offline that the ledger then refused), the answers of ``GET /v1/me`` by key,
and the circuit breaker. Several worker processes may open the same
directory: every offline admission is one ``BEGIN IMMEDIATE`` transaction
that reads what all of them admitted, so the share is a total across the
processes, and it is committed with ``synchronous=FULL`` (on disk) before
the caller hears yes. A second file, ``deliver.lock``, is the outbox's
delivery lock: held as an open SQLite write transaction, so the operating
system releases it if its holder dies.

The rules are the Rust client's (``client/src/offline.rs``):

- no reading, a reading older than ``max_staleness`` or from a period that has
  ended: deny, ``ledger_unreachable``;
- past ``offline_share`` of what remained at the reading (quota or limit less
  used), counting everything admitted offline since: deny,
  ``offline_limit_exceeded``;
- the same key queued already: the same answer (a duplicate), or a conflict
  when the amount differs;
- a reading is stored only when no offline use of its tenant is queued and
  none was admitted or delivered while it was taken (it would not include
  them); online uses decided while it was taken are added to it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._decision import Decision
from ._errors import Conflict, LedgerError
from ._protocol import parse_rfc3339, rfc3339_of_timestamp

# How long decisions stay offline, without trying the network, after the
# ledger failed to answer (the Rust client's OFFLINE_PROBE_INTERVAL).
PROBE_INTERVAL = 1.0

# The field that keys each metered command, and the amount it uses.
METERED = {"upload": ("file", "bytes"), "consume_tokens": ("request", "tokens")}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS circuit (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    offline_until REAL NOT NULL,   -- decide offline until then (Unix time); 0: online
    epoch INTEGER NOT NULL         -- bumped by every offline admission and delivery
);
INSERT OR IGNORE INTO circuit VALUES (0, 0, 0);
CREATE TABLE IF NOT EXISTS identity (key_hash TEXT PRIMARY KEY, me TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS reading (
    tenant TEXT PRIMARY KEY,
    read_at REAL,                  -- NULL: no reading yet
    period_end REAL,
    storage_used INTEGER NOT NULL DEFAULT 0,
    storage_quota INTEGER NOT NULL DEFAULT 0,
    tokens_used INTEGER NOT NULL DEFAULT 0,
    tokens_limit INTEGER NOT NULL DEFAULT 0,
    offline_bytes INTEGER NOT NULL DEFAULT 0,   -- admitted offline since the reading
    offline_tokens INTEGER NOT NULL DEFAULT 0,
    online_bytes INTEGER NOT NULL DEFAULT 0,    -- every online use counted, ever (for readings in flight)
    online_tokens INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key_hash TEXT NOT NULL,
    tenant TEXT NOT NULL,
    command TEXT NOT NULL,
    key TEXT NOT NULL,
    amount INTEGER NOT NULL,
    body TEXT NOT NULL,
    UNIQUE (tenant, command, key)
);
CREATE INDEX IF NOT EXISTS outbox_by_key_hash ON outbox (key_hash, id);
CREATE TABLE IF NOT EXISTS refused (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    command TEXT NOT NULL,
    body TEXT NOT NULL,
    answer TEXT NOT NULL
);
"""


def key_hash(key: str) -> str:
    """What the cache knows a key by (never the key itself)."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class State:
    """What a metered call reads before choosing online or offline."""

    offline_until: float
    pending: bool
    read_at: float | None


@dataclass(frozen=True)
class Base:
    """The counters a usage reading is stored against (read before it is taken)."""

    epoch: int
    online_bytes: int
    online_tokens: int


@dataclass(frozen=True)
class Queued:
    """An outbox entry: a use admitted offline, to deliver."""

    id: int
    tenant: str
    command: str
    body: dict[str, Any]


# How long a write waits for the others at most.
_WRITE_WAIT = 30.0


def _begin_immediate(db: sqlite3.Connection) -> None:
    """``BEGIN IMMEDIATE``, waiting for the other writers in short random sleeps.

    SQLite's own busy handler sleeps longer and longer (up to 100 ms) while
    others keep taking the lock: under contention one process could wait a
    long time for a sub-millisecond transaction. Short sleeps share it fairly.
    """
    deadline = time.monotonic() + _WRITE_WAIT
    db.execute("PRAGMA busy_timeout = 0")
    try:
        tries = 0
        while True:
            try:
                db.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as error:
                busy = "locked" in str(error) or "busy" in str(error)
                if not busy or time.monotonic() > deadline:
                    raise
            time.sleep(random.uniform(0.0, 0.0005 * (1 << min(tries, 3))))
            tries += 1
    finally:
        db.execute(f"PRAGMA busy_timeout = {int(_WRITE_WAIT * 1000)}")


class DeliveryLock:
    """Whoever holds it delivers the outbox (one holder across processes and threads).

    Held as an open write transaction on ``deliver.lock``: SQLite takes a file
    lock for it, which the operating system drops if the process dies.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._here = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._pid = 0

    def try_acquire(self) -> bool:
        """Takes the lock if no one holds it; never waits."""
        if not self._here.acquire(blocking=False):
            return False
        try:
            if self._db is None or self._pid != os.getpid():
                self._db = sqlite3.connect(
                    str(self._path), timeout=0, isolation_level=None, check_same_thread=False
                )
                self._pid = os.getpid()
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            self._here.release()
            return False
        except BaseException:
            self._here.release()
            raise
        return True

    def release(self) -> None:
        """Gives the lock up."""
        try:
            if self._db is not None:
                self._db.execute("ROLLBACK")
        finally:
            self._here.release()

    def close(self) -> None:
        """Closes the lock file's connection."""
        if self._db is not None and self._pid == os.getpid():
            self._db.close()
        self._db = None


class Cache:
    """The reading, the outbox, the refused list and the circuit breaker, in SQLite."""

    def __init__(self, directory: str | os.PathLike[str], max_staleness: float, offline_share: float) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_staleness = float(max_staleness)
        # In parts per million, so the arithmetic is exact for any quota.
        self.share_ppm = round(min(max(float(offline_share), 0.0), 1.0) * 1_000_000)
        self.delivery = DeliveryLock(self.directory / "deliver.lock")
        self._path = self.directory / "ledger-cache.sqlite3"
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._pid = 0

    # -- the database ---------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._db is None or self._pid != os.getpid():
            db = sqlite3.connect(
                str(self._path), timeout=_WRITE_WAIT, isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            try:
                db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} COMMIT;")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            self._db, self._pid = db, os.getpid()
        return self._db

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._connection()

    @contextmanager
    def _write(self, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction; ``durable``: on disk (fsync) when it commits."""
        with self._lock:
            db = self._connection()
            if durable:
                db.execute("PRAGMA synchronous=FULL")
            try:
                _begin_immediate(db)
                try:
                    yield db
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            finally:
                if durable:
                    db.execute("PRAGMA synchronous=NORMAL")

    def close(self) -> None:
        """Closes this process's connections."""
        with self._lock:
            if self._db is not None and self._pid == os.getpid():
                self._db.close()
            self._db = None
        self.delivery.close()

    # -- identity -------------------------------------------------------

    def identity(self, key: str) -> dict[str, Any] | None:
        """The ``/v1/me`` answer last stored for this key hash."""
        with self._read() as db:
            row = db.execute("SELECT me FROM identity WHERE key_hash = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def store_identity(self, key: str, me: dict[str, Any]) -> None:
        """Remembers whom the key speaks for (for a process that starts during an outage)."""
        text = json.dumps(me, sort_keys=True)
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO identity VALUES (?, ?)", (key, text))

    # -- the circuit breaker --------------------------------------------

    def state(self, tenant: str, key: str) -> State:
        """The circuit, whether this key has uses to deliver, and the reading's age."""
        with self._read() as db:
            row = db.execute(
                "SELECT offline_until, EXISTS (SELECT 1 FROM outbox WHERE key_hash = ?),"
                " (SELECT read_at FROM reading WHERE tenant = ?) FROM circuit",
                (key, tenant),
            ).fetchone()
        return State(float(row[0]), bool(row[1]), row[2])

    def may_go_online(self, state: State, probe_window: float) -> bool:
        """Whether to try the ledger now.

        Always while it answers; after it failed, not until the probe interval
        has passed, and then only one caller of all the processes (the one that
        moves the deadline on), while the others decide offline.
        """
        if state.offline_until == 0:
            return True
        now = time.time()
        if now < state.offline_until:
            return False
        with self._write() as db:
            claimed = db.execute(
                "UPDATE circuit SET offline_until = ? WHERE offline_until = ?",
                (now + probe_window, state.offline_until),
            ).rowcount
        return claimed == 1

    def went_offline(self) -> None:
        """The ledger did not answer: decide offline for a while."""
        with self._write() as db:
            db.execute("UPDATE circuit SET offline_until = ?", (time.time() + PROBE_INTERVAL,))

    def came_back(self) -> None:
        """The ledger answered again."""
        with self._write() as db:
            db.execute("UPDATE circuit SET offline_until = 0 WHERE offline_until != 0")

    def give_up_probe(self) -> None:
        """Lets the next caller probe at once (a prober that could not probe)."""
        with self._write() as db:
            db.execute(
                "UPDATE circuit SET offline_until = min(offline_until, ?) WHERE offline_until != 0",
                (time.time(),),
            )

    # -- readings -------------------------------------------------------

    def base(self, tenant: str) -> Base:
        """The counters to store a reading against; read before asking for it."""
        with self._read() as db:
            row = db.execute(
                "SELECT c.epoch, r.online_bytes, r.online_tokens FROM circuit c"
                " LEFT JOIN reading r ON r.tenant = ?",
                (tenant,),
            ).fetchone()
        return Base(int(row[0]), int(row[1] or 0), int(row[2] or 0))

    def remember(self, tenant: str, usage: dict[str, Any], base: Base) -> bool:
        """Stores a usage reading taken after ``base`` was read; whether it was stored.

        Not stored while an offline use of the tenant is queued, or when one was
        admitted or delivered since ``base`` (the reading may miss it: keep
        counting against the old one). Online uses counted since ``base`` are
        added (the reading may include some of them already: counted twice,
        never missed).
        """
        try:
            storage, tokens = usage["storage"], usage["tokens"]
            figures = [storage["used_bytes"], storage["quota_bytes"], tokens["used"], tokens["limit"]]
            period_end = parse_rfc3339(usage["period"]["end"])
        except (KeyError, TypeError, ValueError) as error:
            raise LedgerError("protocol", f"the usage view lacks a figure: {error}") from None
        if not all(isinstance(f, int) and f >= 0 for f in figures):
            raise LedgerError("protocol", f"the usage view's figures are not counts: {figures}")
        used_bytes, quota_bytes, used_tokens, limit_tokens = figures
        with self._write() as db:
            epoch, pending = db.execute(
                "SELECT epoch, EXISTS (SELECT 1 FROM outbox WHERE tenant = ?) FROM circuit", (tenant,)
            ).fetchone()
            if epoch != base.epoch or pending:
                return False
            row = db.execute(
                "SELECT online_bytes, online_tokens FROM reading WHERE tenant = ?", (tenant,)
            ).fetchone()
            online_bytes, online_tokens = row if row else (0, 0)
            db.execute(
                "INSERT OR REPLACE INTO reading VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0, ?, ?)",
                (
                    tenant,
                    time.time(),
                    period_end,
                    used_bytes + (online_bytes - base.online_bytes),
                    quota_bytes,
                    used_tokens + (online_tokens - base.online_tokens),
                    limit_tokens,
                    online_bytes,
                    online_tokens,
                ),
            )
        return True

    def count_online(self, tenant: str, command: str, amount: int) -> None:
        """Adds a use the ledger admitted online to the reading, keeping it current."""
        column = "bytes" if command == "upload" else "tokens"
        used = "storage_used" if command == "upload" else "tokens_used"
        with self._write() as db:
            db.execute(
                f"INSERT INTO reading (tenant, online_{column}) VALUES (?, ?)"
                f" ON CONFLICT (tenant) DO UPDATE SET {used} = {used} + excluded.online_{column},"
                f" online_{column} = online_{column} + excluded.online_{column}",
                (tenant, amount),
            )

    # -- deciding offline -----------------------------------------------

    def decide(self, tenant: str, key: str, command: str, body: dict[str, Any], reason: str) -> Decision:
        """Decides an upload or token use from the reading, for every process at once.

        Admitted: queued in the outbox with ``admitted_offline_at``, on disk
        before this returns. Denied: ``ledger_unreachable`` or
        ``offline_limit_exceeded``. A key queued already with another amount
        raises :class:`Conflict` (``file_exists`` or ``idempotency_conflict``).
        """
        key_field, amount_field = METERED[command]
        amount, id_ = int(body[amount_field]), str(body[key_field])
        with self._write(durable=True) as db:
            now = time.time()
            row = db.execute(
                "SELECT read_at, period_end, storage_used, storage_quota, tokens_used, tokens_limit,"
                " offline_bytes, offline_tokens FROM reading WHERE tenant = ?",
                (tenant,),
            ).fetchone()
            if row is None or row[0] is None:
                return Decision.local(False, "ledger_unreachable", f"{reason}; no cached quota")
            read_at, period_end, storage_used, storage_quota, tokens_used, tokens_limit = row[:6]
            offline_bytes, offline_tokens = row[6:]
            age = max(now - read_at, 0.0)
            if age > self.max_staleness or now >= period_end:
                return Decision.local(
                    False,
                    "ledger_unreachable",
                    f"{reason}; the cached quota is {int(age)}s old or from an ended period",
                )
            queued = db.execute(
                "SELECT amount FROM outbox WHERE tenant = ? AND command = ? AND key = ?",
                (tenant, command, id_),
            ).fetchone()
            if queued is not None:
                if queued[0] != amount:
                    code = "file_exists" if command == "upload" else "idempotency_conflict"
                    raise Conflict(
                        code,
                        f"{id_} was admitted offline with {queued[0]} {amount_field}",
                        409,
                        {"code": code, "offline": True},
                    )
                return Decision.local(True, duplicate=True)
            if command == "upload":
                admitted, allowed = offline_bytes, self._budget(storage_quota, storage_used)
            else:
                admitted, allowed = offline_tokens, self._budget(tokens_limit, tokens_used)
            if admitted + amount > allowed:
                return Decision.local(
                    False,
                    "offline_limit_exceeded",
                    f"{reason}; {admitted} + {amount} {amount_field} is over the offline allowance "
                    f"of {allowed}",
                    requested=amount,
                )
            queued_body = dict(body, admitted_offline_at=rfc3339_of_timestamp(now))
            db.execute(
                "INSERT INTO outbox (key_hash, tenant, command, key, amount, body) VALUES (?, ?, ?, ?, ?, ?)",
                (key, tenant, command, id_, amount, json.dumps(queued_body)),
            )
            column = "offline_bytes" if command == "upload" else "offline_tokens"
            db.execute(
                f"UPDATE reading SET {column} = {column} + ? WHERE tenant = ?",
                (amount, tenant),
            )
            db.execute("UPDATE circuit SET epoch = epoch + 1")
        return Decision.local(True)

    def _budget(self, quota: int, used: int) -> int:
        return max(quota - used, 0) * self.share_ppm // 1_000_000

    # -- the outbox -----------------------------------------------------

    def next_queued(self, key: str) -> Queued | None:
        """The oldest use this key admitted offline and nobody delivered yet."""
        with self._read() as db:
            row = db.execute(
                "SELECT id, tenant, command, body FROM outbox WHERE key_hash = ? ORDER BY id LIMIT 1", (key,)
            ).fetchone()
        return Queued(row[0], row[1], row[2], json.loads(row[3])) if row else None

    def delivered(self, entry: Queued, refusal: dict[str, Any] | None) -> None:
        """Takes a delivered entry off the outbox (onto the refused list, with the answer, if refused)."""
        with self._write(durable=True) as db:
            taken = db.execute("DELETE FROM outbox WHERE id = ?", (entry.id,)).rowcount
            if refusal is not None and taken:
                db.execute(
                    "INSERT INTO refused (tenant, command, body, answer) VALUES (?, ?, ?, ?)",
                    (entry.tenant, entry.command, json.dumps(entry.body), json.dumps(refusal)),
                )
            db.execute("UPDATE circuit SET epoch = epoch + 1")

    def queued(self, key: str | None = None) -> list[dict[str, Any]]:
        """What is waiting in the outbox, oldest first (this key's, or everyone's)."""
        with self._read() as db:
            rows = db.execute(
                "SELECT tenant, command, body FROM outbox WHERE ? IS NULL OR key_hash = ? ORDER BY id",
                (key, key),
            ).fetchall()
        return [{"tenant": t, "cmd": c, **json.loads(b)} for t, c, b in rows]

    def count_queued(self, key: str) -> int:
        """How many uses this key has to deliver."""
        with self._read() as db:
            return int(db.execute("SELECT count(*) FROM outbox WHERE key_hash = ?", (key,)).fetchone()[0])

    def pending(self, key: str) -> bool:
        """Whether this key has uses to deliver."""
        with self._read() as db:
            row = db.execute("SELECT EXISTS (SELECT 1 FROM outbox WHERE key_hash = ?)", (key,)).fetchone()
        return bool(row[0])

    def refused(self) -> list[dict[str, Any]]:
        """Uses admitted offline that the ledger refused on delivery, oldest first."""
        with self._read() as db:
            rows = db.execute("SELECT tenant, command, body, answer FROM refused ORDER BY id").fetchall()
        return [
            {"command": {"tenant": t, "cmd": c, **json.loads(b)}, "answer": json.loads(a)}
            for t, c, b, a in rows
        ]

    def forget_refused(self) -> None:
        """Clears the refused list."""
        with self._write() as db:
            db.execute("DELETE FROM refused")
