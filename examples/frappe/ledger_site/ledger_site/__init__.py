"""A tenant site's hooks for the subscription ledger."""

__version__ = "0.1.0"
