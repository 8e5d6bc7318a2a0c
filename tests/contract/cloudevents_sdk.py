"""Usage sent with the official CloudEvents SDK for Python (cloudevents 2.2.0).

Run by tests/contract.rs against a real `ledger serve --http`, with BASE (the
server) and KEY (acme's user key). It sends what the SDK produces, unchanged:
binary mode (the SDK's default: attributes as ce-* headers), structured mode,
and a batch built from the SDK's JSON format (the SDK has no batch API). Exits
non-zero, with the reason, on the first answer that is not what the HTTP
contract says; prints the totals it expects the ledger to hold.
"""

import http.client
import json
import os
import urllib.parse
from datetime import UTC, datetime

from cloudevents.core.bindings.http import HTTPMessage, to_binary_event, to_structured_event
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

BASE = os.environ["BASE"]
KEY = os.environ["KEY"]
AT = datetime(2026, 3, 15, tzinfo=UTC)


def event(kind: str, event_id: str, data: dict, json_data: bool = True) -> CloudEvent:
    attributes = {"type": kind, "source": "tests/contract sdk", "subject": "acme", "id": event_id, "time": AT}
    if json_data:
        attributes["datacontenttype"] = "application/json"
    return CloudEvent(attributes, data)


def post(message: HTTPMessage) -> list[dict]:
    """POSTs the SDK's message as it is (http.client adds no Content-Type of
    its own, unlike urllib); the answer's results."""
    connection = http.client.HTTPConnection(urllib.parse.urlsplit(BASE).netloc, timeout=30)
    connection.request(
        "POST", "/v1/events", body=message.body, headers=dict(message.headers, Authorization=f"Bearer {KEY}")
    )
    response = connection.getresponse()
    body = response.read()
    connection.close()
    assert response.status == 200, (response.status, body)
    assert response.getheader("Content-Type") == "application/json", response.getheaders()
    return json.loads(body)["results"]


def accepted(results: list[dict], duplicate: bool = False) -> None:
    assert [(r["ok"], r.get("duplicate")) for r in results] == [(True, duplicate)] * len(results), results


# Binary mode, with the data's content type as Content-Type; sent again, a
# duplicate (the id is the idempotency key).
tokens = to_binary_event(event("ledger.tokens.consumed", "sdk-bin-1", {"tokens": 5}))
assert "ce-id" in tokens.headers and tokens.headers["content-type"] == "application/json", tokens.headers
accepted(post(tokens))
accepted(post(tokens), duplicate=True)

# Binary mode without datacontenttype (no Content-Type at all), and an id
# the SDK percent-encodes in its header: the file id is `sdk-"q"%2`.
stored = to_binary_event(event("ledger.file.stored", 'sdk-"q"%2', {"bytes": 2048}, json_data=False))
assert "content-type" not in stored.headers and "%25" in stored.headers["ce-id"], stored.headers
accepted(post(stored))

# Structured mode.
structured = to_structured_event(event("ledger.tokens.consumed", "sdk-str-1", {"tokens": 7}))
assert structured.headers["content-type"] == "application/cloudevents+json", structured.headers
accepted(post(structured))

# Batched mode, from the SDK's own JSON format.
fmt = JSONFormat()
batch = [event("ledger.tokens.consumed", f"sdk-batch-{i}", {"tokens": 100}) for i in range(3)]
body = b"[" + b",".join(fmt.write(e) for e in batch) + b"]"
accepted(post(HTTPMessage({"content-type": "application/cloudevents-batch+json"}, body)))

# A type the ledger does not know is that event's own answer.
unknown = post(to_binary_event(event("com.example.other", "sdk-other", {})))
assert unknown == [{"ok": False, "code": "malformed", "message": unknown[0]["message"]}], unknown

print(json.dumps({"tokens": 5 + 7 + 300, "bytes": 2048}))
