"""Province monitoring: coverage snapshots (the four fulls, supervision rates), sync health, alerts.

No Prefect and no HTTP here: plain functions over the store that flows and the web app call.
"""
