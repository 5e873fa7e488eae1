"""Sync alerts: the Prefect automations declared in ``config/alerts.toml``
(:mod:`grid.monitoring.alert_rules` reads and validates the file).

The file is validated at load (pydantic, clear errors). :func:`automation_specs` turns it into
the automations' JSON (pure, testable without a server); :func:`install` creates or updates the
webhook block and the automations through the Prefect API — idempotently, matched by name — and
:func:`installed` lists them.

Two kinds of automation:

* ``flow-run-failed`` — a reactive trigger on ``prefect.flow-run.Failed`` / ``.Crashed`` events of
  the named flows; the webhook gets ``{"alert", "source", "flow", "flow_run_id", "flow_run_name",
  "state", "ui_url"}`` (``source`` is the run's ``source_name`` parameter, empty for the nightly
  parent run; parameters carry source names only).
* ``source-stale`` — a proactive trigger: one bucket per ``gridflow.source.<name>`` resource, fired
  when no ``gridflow.source.synced`` event arrived within ``stale_hours``; the webhook gets
  ``{"alert", "source", "stale_hours", "ui_url"}``. A bucket starts with a source's first
  successful sync, so a source that never synced is not reported (the health page shows it as
  never synced).

No personal data is in any payload: the templates only reference names, ids, states and links.
"""

from __future__ import annotations

import json
from typing import Any

from grid.monitoring.alert_rules import (
    SOURCE_RESOURCE_PREFIX,
    SYNCED_EVENT,
    TAG,
    AlertsConfig,
    check_webhook_url,
)

# -- automation JSON (what the Prefect API receives) ------------------------------------------


def _failed_payload(ui_url: str, name: str) -> str:
    return (
        "{"
        f'"alert": "{name}", '
        '"source": {{ (flow_run.parameters.get("source_name") or "") | tojson }}, '
        '"flow": {{ (flow.name if flow else "") | tojson }}, '
        '"flow_run_id": "{{ flow_run.id }}", '
        '"flow_run_name": {{ flow_run.name | tojson }}, '
        '"state": {{ (flow_run.state.name if flow_run.state else "") | tojson }}, '
        f'"ui_url": "{ui_url}/runs/flow-run/{{{{ flow_run.id }}}}"'
        "}"
    )


def _stale_payload(ui_url: str, name: str, hours: float) -> str:
    resource = "labels['prefect.resource.id']"
    return (
        "{"
        f'"alert": "{name}", '
        f'"source": {{{{ ({resource} or "") | replace("{SOURCE_RESOURCE_PREFIX}", "") | tojson }}}}, '
        f'"stale_hours": {hours:g}, '
        f'"ui_url": "{ui_url}/events"'
        "}"
    )


def automation_specs(config: AlertsConfig, *, webhook_block_id: str, ui_url: str) -> list[dict[str, Any]]:
    """The automations of ``config`` as Prefect API bodies (``AutomationCore`` JSON)."""
    ui_url = ui_url.rstrip("/")
    specs: list[dict[str, Any]] = []
    for a in config.automations:
        if a.kind == "flow-run-failed":
            trigger: dict[str, Any] = {
                "type": "event",
                "posture": "Reactive",
                "match": {"prefect.resource.id": "prefect.flow-run.*"},
                "match_related": {"prefect.resource.role": "flow", "prefect.resource.name": list(a.flows)},
                "expect": sorted(f"prefect.flow-run.{s}" for s in a.states),
                "threshold": 1,
                "within": 0,
            }
            payload = _failed_payload(ui_url, a.name)
        else:
            hours = a.stale_hours if a.stale_hours is not None else config.freshness.alarm_hours
            trigger = {
                "type": "event",
                "posture": "Proactive",
                "match": {"prefect.resource.id": f"{SOURCE_RESOURCE_PREFIX}*"},
                "after": [SYNCED_EVENT],
                "expect": [SYNCED_EVENT],
                "for_each": ["prefect.resource.id"],
                "threshold": 1,
                "within": hours * 3600,
            }
            payload = _stale_payload(ui_url, a.name, hours)
        specs.append(
            {
                "name": a.name,
                "description": a.description,
                "enabled": a.enabled,
                "tags": [TAG],
                "trigger": trigger,
                "actions": [
                    {"type": "call-webhook", "block_document_id": webhook_block_id, "payload": payload}
                ],
            }
        )
    return specs


# -- the Prefect API ---------------------------------------------------------------------------


def install(config: AlertsConfig, *, webhook_url: str, ui_url: str) -> dict[str, str]:
    """Create or update the webhook block and every automation (matched by name). Returns
    ``{automation name: "created" | "updated" | "unchanged"}``; automations tagged ``gridflow``
    that the file no longer declares are deleted (``"deleted"``)."""
    from prefect.blocks.webhook import Webhook
    from prefect.client.orchestration import get_client
    from prefect.events.schemas.automations import AutomationCore

    url = check_webhook_url(webhook_url)
    block = Webhook(url=url, method="POST", headers={"Content-Type": "application/json"})  # type: ignore[arg-type]
    block_id = str(block.save(config.webhook.block_name, overwrite=True))
    specs = automation_specs(config, webhook_block_id=block_id, ui_url=ui_url)
    done: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        for spec in specs:
            wanted = AutomationCore.model_validate(spec)
            existing = client.read_automations_by_name(spec["name"])
            if not existing:
                client.create_automation(wanted)
                done[spec["name"]] = "created"
                continue
            first, *extra = existing
            for dup in extra:
                client.delete_automation(dup.id)
            same = _comparable(AutomationCore.model_validate(first.model_dump())) == _comparable(wanted)
            if same and not extra:
                done[spec["name"]] = "unchanged"
            else:
                client.update_automation(first.id, wanted)
                done[spec["name"]] = "updated"
        declared = {s["name"] for s in specs}
        for automation in client.read_automations():
            if _ours(automation) and automation.name not in declared:
                client.delete_automation(automation.id)
                done[automation.name] = "deleted"
    return done


def _ours(automation: Any) -> bool:
    """Installed from the alerts file: tagged ``gridflow``, named ``gridflow-*``, and not owned by
    a deployment (deployment triggers from prefect.yaml are Prefect's to manage)."""
    return (
        TAG in (automation.tags or [])
        and str(automation.name).startswith("gridflow-")
        and not getattr(automation, "owner_resource", None)
    )


def _comparable(automation: Any) -> str:
    data = automation.model_dump(mode="json")
    trigger = data.get("trigger", {})
    trigger.pop("id", None)
    return json.dumps(data, sort_keys=True, default=str)


def installed() -> list[dict[str, Any]]:
    """The gridflow automations installed on the Prefect server (name, enabled, trigger kind)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        out = []
        for a in client.read_automations():
            if not _ours(a):
                continue
            trig = a.trigger.model_dump(mode="json")
            out.append(
                {
                    "name": a.name,
                    "id": str(a.id),
                    "enabled": a.enabled,
                    "posture": trig.get("posture", ""),
                    "expect": sorted(trig.get("expect") or []),
                    "within_s": trig.get("within"),
                }
            )
    return sorted(out, key=lambda d: d["name"])


def remove() -> list[str]:
    """Delete every gridflow automation (tests and decommissioning)."""
    from prefect.client.orchestration import get_client

    gone: list[str] = []
    with get_client(sync_client=True) as client:
        for a in client.read_automations():
            if _ours(a):
                client.delete_automation(a.id)
                gone.append(a.name)
    return gone
