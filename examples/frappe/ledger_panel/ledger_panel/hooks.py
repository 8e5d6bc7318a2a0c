"""Frappe hooks of the control panel's app (its endpoint needs none: it is whitelisted)."""

app_name = "ledger_panel"
app_title = "Ledger Panel"
app_publisher = "ledger"
app_description = "Receives the subscription ledger's webhooks: finalized invoices marked for collection"
app_license = "Apache-2.0"
