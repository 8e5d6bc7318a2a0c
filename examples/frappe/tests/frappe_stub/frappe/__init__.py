"""The smallest stand-in for the ``frappe`` module the example's functions use.

Frappe itself cannot be installed here; these are only the names the hooks
call, behaving as Frappe (v15) does for them: ``throw`` raises,
``whitelist`` marks a function, ``db.after_commit`` / ``db.after_rollback``
run their callbacks on ``db.commit()`` / ``db.rollback()`` (and each clears
the other's), ``get_doc(...).insert()`` and ``db.exists`` keep documents in
memory, ``enqueue`` records background jobs, ``request`` is set per request.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


class _dict(dict):
    """A dict whose keys are attributes too (``frappe._dict``)."""

    def __getattr__(self, name: str) -> Any:
        return self.get(name)

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value


class ValidationError(Exception):
    """``frappe.throw``'s default: Frappe answers 417."""


class AuthenticationError(Exception):
    """Frappe answers 401."""


conf = _dict()
local = _dict(site="test.localhost")
request: Any = None
enqueued: list[tuple[str, dict[str, Any]]] = []
whitelisted: dict[str, dict[str, Any]] = {}


def _(text: str) -> str:
    """Translation: the text itself."""
    return text


def throw(msg: str, exc: type[Exception] = ValidationError, title: str | None = None) -> None:
    """Raises ``exc(msg)``, as Frappe does (it shows ``msg`` to the user)."""
    raise exc(msg)


def whitelist(allow_guest: bool = False, methods: list[str] | None = None) -> Callable[[Any], Any]:
    """Marks a function callable over ``/api/method/``."""

    def mark(function: Any) -> Any:
        whitelisted[function.__name__] = {"allow_guest": allow_guest, "methods": methods}
        return function

    return mark


def as_json(value: Any) -> str:
    """JSON text, as Frappe writes it."""
    return json.dumps(value, indent=1, sort_keys=True)


def get_site_path(*parts: str) -> str:
    """A path under the site's directory."""
    return "/".join(["sites", local.site, *parts])


def enqueue(method: str, queue: str = "default", **kwargs: Any) -> None:
    """Records a background job (``enqueued``); a test runs it."""
    enqueued.append((method, kwargs))


class _Callbacks:
    def __init__(self) -> None:
        self._functions: list[Callable[[], Any]] = []

    def add(self, function: Callable[[], Any]) -> None:
        self._functions.append(function)

    def run(self) -> None:
        functions, self._functions = self._functions, []
        for function in functions:
            function()

    def reset(self) -> None:
        self._functions = []


class _Database:
    def __init__(self) -> None:
        self.after_commit = _Callbacks()
        self.after_rollback = _Callbacks()
        self.docs: dict[tuple[str, str], dict[str, Any]] = {}

    def commit(self) -> None:
        self.after_rollback.reset()
        self.after_commit.run()

    def rollback(self) -> None:
        self.after_commit.reset()
        self.after_rollback.run()

    def exists(self, doctype: str, name: str) -> bool:
        return (doctype, name) in self.docs


db = _Database()


class _Document(_dict):
    def insert(self, ignore_permissions: bool = False) -> _Document:
        db.docs[(self["doctype"], self["name"])] = dict(self)
        return self


def get_doc(fields: dict[str, Any]) -> _Document:
    """A new document (``insert()`` keeps it in ``db.docs``)."""
    return _Document(fields)


def reset() -> None:
    """Forgets everything (between tests)."""
    global request
    conf.clear()
    enqueued.clear()
    db.__init__()  # type: ignore[misc]
    request = None
