"""Schemathesis over the OpenAPI document: a bounded number of generated requests per operation,
signed in, with 0 server errors and 0 responses that break the document (status codes, content
types, bodies)."""

from __future__ import annotations

import secrets
from collections import Counter
from typing import Any

import psycopg2
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from grid.accounts.access import Role
from grid.accounts.users import add_user
from tests.web.conftest import PASSWORD, client, login

#: Where the fuzzer's requests say they come from (through a trusted proxy): its failed logins must
#: not throttle the test client the other tests sign in from.
FUZZ_CLIENT = "198.51.100.77"
EXAMPLES_PER_OPERATION = 40


@pytest.fixture(scope="module")
def fuzz_app(app_factory: Any) -> Any:
    return app_factory(trusted_proxies="testclient")


#: A city far from every test's data (the sample world and the web tree are in Hubei).
FUZZ_SCOPE = "650100000000"


@pytest.fixture(scope="module")
def signed_in(fuzz_app: Any, database_url: str) -> dict[str, Any]:
    """A city user of its own whose scope holds no case at all: fuzzed actions can change nothing."""
    name = f"fuzz{secrets.token_hex(4)}"
    conn = psycopg2.connect(database_url)
    try:
        add_user(conn, login=name, password=PASSWORD, role=Role.CITY, scope_code=FUZZ_SCOPE)
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM case_file WHERE chain_code LIKE %s", (FUZZ_SCOPE[:4] + "%",))
            assert cur.fetchone() == (0,)
    finally:
        conn.close()
    c = client(fuzz_app)
    csrf = login(c, name)
    cookie = fuzz_app.state.gridflow.web.cookie_name
    return {
        "cookies": {cookie: c.cookies.get(cookie)},
        "headers": {"X-CSRF-Token": csrf, "X-Forwarded-For": FUZZ_CLIENT},
    }


def test_api_answers_generated_requests_as_documented(fuzz_app: Any, signed_in: dict[str, Any]) -> None:
    """Every operation of the document, EXAMPLES_PER_OPERATION generated requests each (valid and
    invalid data): no 5xx, and every answer is one the document states (status, type, body)."""
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", fuzz_app)
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    failures: list[str] = []
    operations: list[str] = []
    seen: dict[str, Counter[int]] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        operations.append(operation.label)
        seen[operation.label] = Counter()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            headers = {**(case.headers or {}), **signed_in["headers"]}
            response = case.call(cookies=signed_in["cookies"], headers=headers)
            seen[case.operation.label][response.status_code] += 1
            case.validate_response(response, checks=checks)

        try:
            run()
        except Exception as exc:  # one shrunk failure per operation, all reported at the end
            failures.append(f"{operation.label}: {exc}")
    assert len(operations) >= 7, operations
    assert not failures, "\n\n".join(failures)
    # the requests were signed in (not 401 everywhere), and the fuzzer reached the handlers
    assert seen["GET /api/v1/me"][200] > 0 and seen["GET /api/v1/cases"][200] > 0, seen
    assert seen["POST /api/v1/cases/{case_id}/actions/{action}"][404] > 0, seen


def test_the_document_states_auth_csrf_the_action_enum_and_every_status_code(web_app: Any) -> None:
    from grid.cases.states import Action

    doc = client(web_app).get("/api/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["session"] == {
        "type": "apiKey",
        "in": "cookie",
        "name": web_app.state.gridflow.web.cookie_name,
        "description": schemes["session"]["description"],
    }
    assert (schemes["csrf"]["type"], schemes["csrf"]["in"], schemes["csrf"]["name"]) == (
        "apiKey",
        "header",
        "X-CSRF-Token",
    )
    assert set(doc["paths"]) == {
        "/api/v1/session",
        "/api/v1/me",
        "/api/v1/cases",
        "/api/v1/cases/{case_id}",
        "/api/v1/cases/{case_id}/actions/{action}",
        "/api/v1/cases/{case_id}/reveal",
        "/api/v1/ledger",
    }
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            where = f"{method.upper()} {path}"
            codes = set(op["responses"])
            assert {"200", "401"} <= codes, where
            if op.get("parameters") or op.get("requestBody"):
                assert "422" in codes, where
            wanted = (
                []
                if path == "/api/v1/session"
                else [{"session": []}]
                if method == "get"
                else [{"session": [], "csrf": []}]
            )
            got = op.get("security", [])
            assert got == wanted, where
    action = next(
        p
        for p in doc["paths"]["/api/v1/cases/{case_id}/actions/{action}"]["post"]["parameters"]
        if p["name"] == "action"
    )
    ref = action["schema"].get("$ref", "").rsplit("/", 1)[-1]
    enum = doc["components"]["schemas"][ref]["enum"] if ref else action["schema"]["enum"]
    assert sorted(enum) == sorted(a.value for a in Action)
    act = doc["paths"]["/api/v1/cases/{case_id}/actions/{action}"]["post"]["responses"]
    assert set(act) == {"200", "400", "401", "403", "404", "409", "422"}
