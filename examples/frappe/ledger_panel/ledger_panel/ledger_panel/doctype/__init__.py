"""DocTypes of the Ledger Panel module."""
