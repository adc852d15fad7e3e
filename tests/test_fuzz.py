"""The API fuzzed from its own OpenAPI schema (schemathesis) against a real `avatar serve`: no
5xx on any generated request, and every answer matches the schema (status, type, body)."""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                               status_code_conformance)

from stack import api_stack, service_env

MAX_EXAMPLES = 15  # per operation: ~200 requests, a few seconds
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzz_stack(postgres, s3, redis_url, weights_dir, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("fuzz")
    env = service_env(postgres, s3, redis_url, weights_dir, RATE_LIMIT_PER_MINUTE="0")
    with api_stack(env, cwd, admin=("fuzz", "--admin")) as st:
        yield st


def test_no_generated_request_gets_a_5xx_or_an_undocumented_answer(fuzz_stack):
    # driven by hand: schemathesis' pytest plugin does not load under this pytest
    schema = schemathesis.openapi.from_url(f"{fuzz_stack.base}/openapi.json")
    headers = {"Authorization": f"Bearer {fuzz_stack.keys['admin']}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:
        # /ready's 503 (no worker runs here) is its documented answer, not a crash
        checks = CHECKS[1:] if operation.path == "/ready" else CHECKS

        @given(case=operation.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None)
        def fuzz(case):
            case.call_and_validate(headers=headers, checks=checks)
        fuzz()
