"""schemathesis against the gateway's own OpenAPI schema: no 5xx, and every answer as documented.

The operations run one after another inside one test (schemathesis's pytest integration does not
support this pytest version), each with a bounded number of generated examples.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from schemathesis import Case
from schemathesis.openapi import from_url

from tests.integration.support import GatewayServer

EXAMPLES_PER_OPERATION = 40


def test_the_api_answers_every_generated_request_as_its_schema_says(
    gateway: GatewayServer, figures: dict[str, str]
) -> None:
    schema = from_url(f"{gateway.base_url}/schema/openapi.json")
    checked = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def answers_as_documented(case: Case) -> None:
            case.call_and_validate()

        answers_as_documented()
        checked.append(operation.label)
    assert {
        "GET /object/{object_id}",
        "PUT /object/{object_id}",
        "DELETE /object/{object_id}",
    } <= set(checked)
    figures["schemathesis"] = (
        f"{len(checked)} operations, up to {EXAMPLES_PER_OPERATION} examples each, no failure"
    )
