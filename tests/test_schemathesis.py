"""Schemathesis against the live edge of the test mesh: its OpenAPI document (/openapi.json)
drives generated requests, valid and not, to every operation; none may get a 5xx or an
answer that breaks the document (status, content type, headers, body schema).

Bounded (MAX_EXAMPLES per operation, small sizes are as likely as big ones) so the run stays
around two minutes on a loaded two-core machine.
"""

from __future__ import annotations

import httpx
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.checks import not_a_server_error

MAX_EXAMPLES = 12
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]


def operations(edge_url: str) -> list:
    schema = schemathesis.openapi.from_url(f"{edge_url}/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


def test_the_document_describes_the_real_bodies(edge_url: str) -> None:
    doc = httpx.get(f"{edge_url}/openapi.json", timeout=30).json()
    generations = doc["paths"]["/v1/images/generations"]["post"]
    assert "prompt" in generations["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert "text/event-stream" in generations["responses"]["200"]["content"]
    edits = doc["paths"]["/v1/images/edits"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert edits["properties"]["image"] == {"type": "string", "format": "binary"}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert {"400", "401", "429", "503"} <= set(op["responses"]), (method, path)


def test_edge_answers_every_generated_request_as_documented(edge_url: str, api_key: str) -> None:
    failures: list[str] = []
    ops = operations(edge_url)
    assert len(ops) >= 9
    for op in ops:

        @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy())
        def run(case) -> None:
            case.call_and_validate(base_url=edge_url, headers={"Authorization": f"Bearer {api_key}"}, checks=CHECKS,
                                   timeout=120)

        try:
            run()
        except Exception as exc:  # one operation's failure must not hide the others'
            failures.append(f"{op.label}: {exc}")
    assert not failures, "\n\n".join(failures)
