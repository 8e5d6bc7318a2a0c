"""The control panel's webhook endpoint for the subscription ledger."""

__version__ = "0.1.0"
