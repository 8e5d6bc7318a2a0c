"""Frappe hooks of the tenant site's app."""

app_name = "ledger_site"
app_title = "Ledger Site"
app_publisher = "ledger"
app_description = "Storage quota on File and AI tokens per call, decided by the subscription ledger"
app_license = "Apache-2.0"

doc_events = {
    "File": {
        # Decide before the row exists, so the insert can be refused.
        "before_insert": "ledger_site.storage.before_insert",
        # Free the bytes once the deletion is committed.
        "on_trash": "ledger_site.storage.on_trash",
    }
}

# The File field that carries the ledger's file id from before_insert to on_trash.
fixtures = [{"dt": "Custom Field", "filters": [["name", "=", "File-ledger_file_id"]]}]
