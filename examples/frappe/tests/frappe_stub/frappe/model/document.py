"""``frappe.model.document.Document`` (stand-in): what a DocType's controller subclasses."""


class Document:
    """A document (the stand-in has no behaviour of its own)."""
