"""The control panel's webhook endpoint: ``POST /api/method/ledger_panel.webhooks.receive``.

Register it with the ledger (``ledger webhooks add URL --types invoice.finalized``,
or ``POST /v1/webhooks`` with the panel key) and put the secret it prints in
``site_config.json`` as ``ledger_webhook_secret``. Every delivery is verified
with ``standardwebhooks`` (the signature over ``webhook-id``,
``webhook-timestamp`` and the raw body, and a timestamp within 5 minutes);
anything else is refused with 401, and the ledger tries again later.

Deliveries are at least once: a repeat (same ``webhook-id``) changes nothing
here, because a finalized invoice is recorded once, by tenant and period.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import frappe
from frappe import _
from standardwebhooks import Webhook, WebhookVerificationError


@frappe.whitelist(allow_guest=True, methods=["POST"])
def receive() -> dict[str, Any]:
    """Verifies a ledger notification, then acts on it."""
    secret = frappe.conf.get("ledger_webhook_secret")
    if not secret:
        frappe.throw(_("ledger_webhook_secret is not configured"), frappe.AuthenticationError)
    try:
        payload = Webhook(secret).verify(frappe.request.get_data(), dict(frappe.request.headers))
    except WebhookVerificationError:
        frappe.throw(_("Invalid webhook signature"), frappe.AuthenticationError)
    if payload["type"] == "invoice.finalized":
        mark_for_collection(payload["data"])
    return {"ok": True}


def mark_for_collection(invoice: dict[str, Any]) -> str:
    """Records a finalized invoice as one to collect (once per tenant and period); its name."""
    name = f"{invoice['tenant']}:{invoice['period']['start']}"
    if not frappe.db.exists("Ledger Invoice", name):
        due = Decimal(invoice["amount_due"])
        frappe.get_doc(
            {
                "doctype": "Ledger Invoice",
                "name": name,
                "tenant": invoice["tenant"],
                "period_start": invoice["period"]["start"],
                "period_end": invoice["period"]["end"],
                "currency": invoice["currency"],
                "total": invoice["total"],
                "amount_due": invoice["amount_due"],
                "collection_status": "To Collect" if due > 0 else "Nothing Due",
                "invoice": frappe.as_json(invoice),
            }
        ).insert(ignore_permissions=True)
    return name
