"""A recorded decision: accepted, a duplicate, or a denial with its figures."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class Decision:
    """The answer to a command that was decided (never an exception).

    - accepted: ``ok=True``, ``seq`` the log position (in log ``partition``,
      0 on a ledger of one partition), ``duplicate`` when it
      was a resend of a command already recorded under the same key;
    - denied: ``ok=False`` with ``code`` (``token_limit_exceeded``,
      ``storage_quota_exceeded``) and the figures behind it (``used``,
      ``limit`` or ``quota``, ``requested``); the denial is recorded too;
    - decided by this client while the ledger was unreachable: ``offline=True``,
      ``seq=None``; admitted (queued for delivery) or denied with
      ``ledger_unreachable`` or ``offline_limit_exceeded``.

    In a batch's results a rejected item is a ``Decision`` with ``ok=False``
    and the rejection's code, as the ledger answers it in its place.
    """

    ok: bool
    code: str | None = None
    partition: int | None = None
    seq: int | None = None
    duplicate: bool = False
    offline: bool = False
    message: str | None = None
    used: int | None = None
    limit: int | None = None
    quota: int | None = None
    requested: int | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any], *, offline: bool = False) -> Decision:
        """The decision the ledger answered (``raw`` must carry a boolean ``ok``)."""
        code = raw.get("code")
        message = raw.get("message")
        return cls(
            ok=raw["ok"] is True,
            code=code if isinstance(code, str) else None,
            partition=_count(raw.get("partition")),
            seq=_count(raw.get("seq")),
            duplicate=raw.get("duplicate") is True,
            offline=offline,
            message=message if isinstance(message, str) else None,
            used=_count(raw.get("used")),
            limit=_count(raw.get("limit")),
            quota=_count(raw.get("quota")),
            requested=_count(raw.get("requested")),
            raw=dict(raw),
        )

    @classmethod
    def local(
        cls,
        ok: bool,
        code: str | None = None,
        message: str | None = None,
        *,
        duplicate: bool = False,
        requested: int | None = None,
    ) -> Decision:
        """A decision this client made from its cache (``offline=True``)."""
        raw: dict[str, Any] = {"ok": ok, "offline": True}
        if duplicate:
            raw["duplicate"] = True
        if code is not None:
            raw.update(code=code, message=message)
        if requested is not None:
            raw["requested"] = requested
        return cls(
            ok=ok,
            code=code,
            duplicate=duplicate,
            offline=True,
            message=message,
            requested=requested,
            raw=raw,
        )
