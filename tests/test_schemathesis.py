"""schemathesis against the live service's /openapi.json (issue 10): generated requests,
valid and invalid by the schema, for every operation; every answer must match the schema
(declared status, body and content type) and none may be a 5xx.

``positive_data_acceptance`` is left out: a schema cannot say "a decodable recording of
pronounceable words", so schema-valid random bytes are rightly refused with 415 or 422.
A fake model (tests/serve_helpers.py) answers, so the run takes seconds."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("fastapi")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import positive_data_acceptance  # noqa: E402

from serve_helpers import FakeModel, LiveServer, wav_bytes  # noqa: E402


@pytest.fixture(scope="module")
def api_schema(tiny_processor):
    from apa.serve import create_app

    app = create_app(None, tiny_processor, model_name="fake", score_fn=FakeModel(calls_per_word=1), max_wait_ms=1)
    with LiveServer(app) as live:
        yield schemathesis.openapi.from_url(live.url + "/openapi.json")


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_generated_requests_get_answers_that_match_the_schema(api_schema, mode):
    from hypothesis import given
    from hypothesis.errors import Unsatisfiable
    from schemathesis.generation import GenerationMode

    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /score", "GET /health", "GET /metrics"}
    for operation in operations:
        @given(case=operation.as_strategy(generation_mode=GenerationMode(mode)))
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)
        def check(case):
            response = case.call_and_validate(excluded_checks=[positive_data_acceptance])
            assert response.status_code < 500, response.text

        try:
            check()
        except Unsatisfiable:  # no parameters and no body: nothing can be made invalid
            assert mode == "negative" and operation.method.upper() == "GET", operation.label


def test_a_real_upload_matches_the_schema(api_schema, make_sine):
    case = api_schema["/score"]["POST"].Case(body={"audio": wav_bytes(make_sine(1.0)), "text": "Hello,world 3 times"},
                                             media_type="multipart/form-data")
    response = case.call_and_validate()
    assert response.status_code == 200 and response.json()["text"] == "HELLO WORLD THREE TIMES"
