"""Property-based run of the OpenAPI document against a real server: no 5xx, every response
matches its declared status, content type and schema."""

from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.http.conftest import Server

pytestmark = pytest.mark.slow
EXAMPLES_PER_OPERATION = 30
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def test_api_conforms_to_its_openapi_document(server: Server) -> None:
    schema = schemathesis.openapi.from_url(f"{server.base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 17
    seen: Counter[tuple[str, int]] = Counter()
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def conforms(case: schemathesis.Case) -> None:
            response = case.call_and_validate(checks=CHECKS, timeout=30)
            seen[(case.operation.label, response.status_code)] += 1

        conforms()
    # The run reached both sides of the main operations.
    for expected in (("POST /enqueue", 201), ("POST /enqueue", 400), ("GET /tasks", 200),
                     ("GET /tasks/{task_id}", 404), ("POST /enqueue/batch", 201)):  # fmt: skip
        assert seen[expected], (expected, sorted(seen.items()))
