"""Schemathesis over the server's OpenAPI schema: no input may cause a 5xx.

Bounded (a few examples per operation, no shrinking) so it stays a few seconds; the model calls
are real, so answers are capped through the generated ``max_tokens`` where the schema has it.
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")


def test_openapi_fuzz_no_server_errors(live) -> None:
    from hypothesis import HealthCheck, Phase, settings

    schema = schemathesis.openapi.from_url(live.url + "/openapi.json")
    failures: list[str] = []

    @settings(max_examples=6, deadline=None, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck), derandomize=True)  # fmt: skip
    def run_case(case) -> None:
        response = case.call(timeout=30)
        if response.status_code >= 500:
            failures.append(f"{case.method} {case.path} -> {response.status_code}: "
                            f"{response.text[:200]}")  # fmt: skip

    for result in schema.get_all_operations():
        operation = result.ok()
        strategy = operation.as_strategy()
        from hypothesis import given

        given(case=strategy)(run_case)()
    assert not failures, failures
