"""Rejections: the ledger recorded nothing, and says why (one class per HTTP status)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class LedgerError(Exception):
    """A rejection: the ledger recorded nothing (an RFC 9457 problem).

    ``code`` is the ledger's code (``idempotency_conflict``, ``unknown_file``, ...),
    ``status`` the HTTP status, ``detail`` the ledger's words, and ``problem`` the
    whole problem object (with any figures it carries). A recorded denial is not
    an error: it is a :class:`~ledger_client.Decision` with ``ok=False``.
    """

    status: int | None
    code: str
    detail: str
    problem: Mapping[str, Any]

    def __init__(
        self,
        code: str,
        detail: str,
        status: int | None = None,
        problem: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status or '-'} {code}: {detail}")
        self.code = code
        self.detail = detail
        self.status = status
        self.problem = dict(problem or {})


class Invalid(LedgerError):
    """400: the request alone is wrong (``malformed``, ``invalid_amount``, ``invalid_seats``)."""


class Unauthorized(LedgerError):
    """401: no key, or an unknown or revoked one."""


class Forbidden(LedgerError):
    """403: the key may not do this (another tenant, a panel route, a role's limit)."""


class NotFound(LedgerError):
    """404: no such plan, add-on, purchase, file or subscription (or route: ``not_found``)."""


class Conflict(LedgerError):
    """409: the ledger's state refuses it (``idempotency_conflict``, ``file_exists``, ...)."""


class TooLarge(LedgerError):
    """413: the body is over the ledger's 1 MiB limit."""


class LedgerUnavailable(LedgerError):
    """No decision: a 503, or no answer at all, after every retry within ``timeout``.

    ``outcome_unknown`` is true when a request may have reached the ledger (it may
    have been recorded): resend the same call, which carries the same idempotency
    key, and the ledger answers it as the first time (``duplicate=True``) or
    decides it afresh. It is false when no request got through (nothing listened).
    """

    outcome_unknown: bool

    def __init__(
        self,
        code: str,
        detail: str,
        status: int | None = None,
        problem: Mapping[str, Any] | None = None,
        *,
        outcome_unknown: bool = False,
    ) -> None:
        super().__init__(code, detail, status, problem)
        self.outcome_unknown = outcome_unknown


_BY_STATUS: dict[int, type[LedgerError]] = {
    400: Invalid,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: TooLarge,
}


def error_for(status: int, problem: Mapping[str, Any], fallback: str) -> LedgerError:
    """The exception for a rejection of ``status`` with this problem object."""
    code = problem.get("code")
    detail = problem.get("detail") or problem.get("message") or fallback
    kind = _BY_STATUS.get(status, LedgerError)
    return kind(code if isinstance(code, str) else f"http_{status}", str(detail), status, problem)
