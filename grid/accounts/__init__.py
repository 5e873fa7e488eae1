"""Accounts: who a user is and what the user may see and do (``access``)."""
