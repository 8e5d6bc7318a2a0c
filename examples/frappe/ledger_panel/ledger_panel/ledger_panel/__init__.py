"""The Ledger Panel module."""
