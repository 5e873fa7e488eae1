"""Province monitoring: coverage snapshots (the four fulls, supervision rates), sync health, alerts.

Plain functions over the store that flows, the CLI and the web app call. The one Prefect part,
``alerts`` (automations installed through the Prefect API), is its exception.
"""
