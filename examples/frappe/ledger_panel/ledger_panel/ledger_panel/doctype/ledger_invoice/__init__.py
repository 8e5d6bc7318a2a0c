"""The Ledger Invoice DocType."""
