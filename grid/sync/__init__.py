"""Sync: the record store and the one-transaction page write (``store``), quarantine reprocessing
(``reprocess``) and sync health (``health``) that the flows, the CLI and the web call."""
