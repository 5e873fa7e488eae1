"""Flow tests use the session-wide Prefect harness fixture `prefect_harness` from tests/conftest.py."""
