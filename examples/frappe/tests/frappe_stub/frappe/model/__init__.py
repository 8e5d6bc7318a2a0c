"""``frappe.model`` (stand-in)."""
