"""Property-based tests of `speakerid serve` from its own OpenAPI document (schemathesis), against
a real server on 127.0.0.1: valid and invalid requests alike never give a 500, every status is
one the document declares, and every body (error bodies included) matches its schema."""

from __future__ import annotations

import serve_helpers as H

#: Examples per operation and generation mode: bounded, so the test takes a few seconds.
EXAMPLES_N = 12
NO_INPUTS = ("/v1/health", "/v1/info", "/v1/speakers")


def test_openapi_properties_hold_for_every_operation(env):
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.specs.openapi import checks as oc

    aux = H.aux_server(env)  # its own copy of the gallery: generated deletes touch nothing shared
    assert aux.url.startswith("http://127.0.0.1:")
    schema = schemathesis.openapi.from_url(f"{aux.url}/openapi.json")
    checks = [schemathesis.checks.not_a_server_error, oc.status_code_conformance, oc.content_type_conformance,
              oc.response_schema_conformance]
    headers = env.headers("admin")
    ran: list[str] = []
    statuses: dict[int, int] = {}
    for result in schema.get_all_operations():
        op = result.ok()
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

            @given(case=op.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES_N, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            def run(case) -> None:
                response = case.call_and_validate(headers=headers, checks=checks, timeout=30)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

            try:
                run()
            except Unsatisfiable:  # nothing to make invalid (no parameters, no body): nothing to test
                assert mode == schemathesis.GenerationMode.NEGATIVE and op.path in NO_INPUTS, op.path
        ran.append(f"{op.method.upper()} {op.path}")
    assert len(ran) == 9, ran  # POST /v1/diarize included
    print(statuses)
    assert sum(statuses.values()) >= 9 * EXAMPLES_N and 500 not in statuses
    assert any(s < 300 for s in statuses) and any(400 <= s < 500 for s in statuses)
