"""A tenant's finalized invoice, as the ledger announced it, and whether it was collected."""

from frappe.model.document import Document


class LedgerInvoice(Document):
    """Named ``<tenant>:<period start>``: one per period, however often it is announced."""
