"""What the sync and async clients share: requests as effects, retries, answers.

Every call is written once, as a generator that yields *effects* (send this
request, sleep this long, run this blocking function) and receives their
results; :class:`~ledger_client.Client` runs it with ``httpx.Client`` and
``time.sleep``, :class:`~ledger_client.AsyncClient` with ``httpx.AsyncClient``
and ``asyncio.sleep``. So the retry rules, the idempotency keys, the answer
parsing and the offline fallback are the same code in both.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Callable, TypeVar, Union

import httpx

from ._decision import Decision
from ._errors import LedgerError, LedgerUnavailable, error_for

T = TypeVar("T")


@dataclass(frozen=True)
class Send:
    """Send one HTTP request; the runner answers with the ``httpx.Response``."""

    method: str
    path: str
    json: Any = None
    params: Mapping[str, str] | None = None
    headers: Mapping[str, str] | None = None
    timeout: float = 5.0


@dataclass(frozen=True)
class Sleep:
    """Wait this many seconds."""

    seconds: float


@dataclass(frozen=True)
class Blocking:
    """Run ``fn`` (local disk work: the cache's durable writes) and answer its result.

    The async runner runs it in a worker thread, so an fsync never holds the
    event loop.
    """

    fn: Callable[[], Any]


Effect = Union[Send, Sleep, Blocking]
Op = Generator[Effect, Any, T]
"""A call as a generator of effects, returning ``T``."""


class Retry(Enum):
    """When a request is sent again (always with the same body and headers)."""

    KEYED = "keyed"
    """On a transport error, a 502/503/504, until ``timeout``: reads, and
    commands carrying an idempotency key (a resend is recognized)."""
    UNSENT = "unsent"
    """Only while no attempt can have reached the ledger (the connection was
    refused): calls a resend could repeat (creating a key or a webhook)."""
    ONCE = "once"
    """One attempt: delivering the outbox, probing a ledger that was down."""


# Transport errors raised before any byte of the request left this machine.
_UNSENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# An answer from the ledger (or a proxy before it) that decided nothing.
_UNAVAILABLE_STATUSES = (502, 503, 504)
_FIRST_BACKOFF = 0.05
_MAX_BACKOFF = 1.0
# No attempt is started with less time than this left (it could only time out).
_SHORTEST_ATTEMPT = 0.1


def _backoff(attempt: int) -> float:
    base = min(_MAX_BACKOFF, _FIRST_BACKOFF * (1 << min(attempt, 16)))
    return base * (0.75 + random.random() / 2)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def request(send: Send, *, timeout: float, retry: Retry) -> Op[httpx.Response]:
    """Sends ``send`` until the ledger answers, within ``timeout`` seconds.

    Returns the first answer that is not a 502, 503 or 504 (any other status
    is the caller's to read). Raises :class:`LedgerUnavailable` when the time
    or the retries run out, with ``outcome_unknown`` set when an attempt may
    have reached the ledger.
    """
    deadline = time.monotonic() + timeout
    maybe_sent = False
    attempt = 0
    while True:
        remaining = deadline - time.monotonic()
        status: int | None = None
        problem: dict[str, Any] = {}
        try:
            response: httpx.Response = yield replace(send, timeout=max(remaining, 0.001))
        except httpx.TransportError as error:
            unsent = isinstance(error, _UNSENT)
            maybe_sent = maybe_sent or not unsent
            detail = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            wait = _backoff(attempt)
            again = retry is Retry.KEYED or (retry is Retry.UNSENT and unsent)
        else:
            if response.status_code not in _UNAVAILABLE_STATUSES:
                return response
            maybe_sent = True
            status = response.status_code
            problem = _problem(response)
            detail = str(problem.get("detail") or f"HTTP {status} {response.reason_phrase}")
            after = _retry_after(response)
            wait = max(after, _backoff(attempt)) if after is not None else _backoff(attempt)
            again = retry is Retry.KEYED
        attempt += 1
        if not again or deadline - (time.monotonic() + wait) < min(_SHORTEST_ATTEMPT, timeout / 4):
            code = problem.get("code") if isinstance(problem.get("code"), str) else "unavailable"
            tries = f"{attempt} attempt{'s' if attempt > 1 else ''}"
            raise LedgerUnavailable(
                str(code),
                f"the ledger did not decide ({tries} in {timeout:g}s): {detail}",
                status,
                problem,
                outcome_unknown=maybe_sent,
            )
        yield Sleep(wait)


def answer(response: httpx.Response) -> Any:
    """The JSON body of a 2xx answer; raises the rejection of any other."""
    if response.is_success:
        try:
            return response.json()
        except ValueError as error:
            raise LedgerError("protocol", f"the answer is not JSON: {error}", response.status_code) from None
    raise error_for(response.status_code, _problem(response), response.reason_phrase or "")


def expect_object(body: Any, what: str) -> dict[str, Any]:
    """``body`` if it is a JSON object, else a protocol error."""
    if not isinstance(body, dict):
        raise LedgerError("protocol", f"{what} is not a JSON object: {body!r}")
    return body


def decision(response: httpx.Response) -> Decision:
    """The decision a command's 200 carries; raises the rejection of anything else."""
    body = expect_object(answer(response), "the decision")
    if not isinstance(body.get("ok"), bool):
        raise LedgerError("protocol", f"the decision has no boolean ok: {body!r}", response.status_code)
    return Decision.from_json(body)


def results(response: httpx.Response) -> list[Decision]:
    """The decisions of a batch, in order."""
    body = expect_object(answer(response), "the batch's answer")
    items = body.get("results")
    if not isinstance(items, list) or not all(isinstance(i, dict) and "ok" in i for i in items):
        raise LedgerError("protocol", f"the batch's answer has no results: {body!r}")
    return [Decision.from_json(item) for item in items]


Instant = Union[str, datetime]


def rfc3339(at: Instant) -> str:
    """An instant as the ledger reads it (a ``datetime`` without zone is UTC)."""
    if isinstance(at, str):
        return at
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def rfc3339_of_timestamp(seconds: float) -> str:
    """A Unix time as an RFC 3339 instant (UTC, microseconds)."""
    return rfc3339(datetime.fromtimestamp(seconds, timezone.utc))


_INSTANT = re.compile(r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})$")


def parse_rfc3339(text: str) -> float:
    """A Unix time for an RFC 3339 instant (any fraction; Python 3.9's parser takes 3 or 6 digits)."""
    match = _INSTANT.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not an RFC 3339 instant")
    date, clock, fraction, zone = match.groups()
    zone = "+00:00" if zone in ("Z", "z") else zone
    whole = datetime.fromisoformat(f"{date}T{clock}{zone}").timestamp()
    return whole + (float(f"0.{fraction}") if fraction else 0.0)
