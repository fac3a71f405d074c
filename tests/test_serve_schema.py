"""The server's OpenAPI schema against its behaviour: schemathesis generates requests (valid and
invalid) for every operation of /openapi.json and sends them to a live server (tiny random
Llama, serve/testing.py). Checks: no 5xx for any input, and every response's status code and body
are ones the schema declares. A bounded run: ``examples(n)`` per operation (x12 under
HYPOTHESIS_PROFILE=thorough)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from myllm101.serve.app import ServeSettings, create_app
from myllm101.serve.engine import load_engine
from myllm101.serve.testing import LiveServer, tiny_model_dir
from parity_tests.helpers import examples
from tests.train_helpers import one_thread  # noqa: F401 (autouse fixture)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    engine = load_engine(str(tiny_model_dir(tmp_path_factory.mktemp("schema") / "tiny")), "fp32")
    settings_ = ServeSettings(max_batch=4, max_tokens_cap=16, embed_dtype="fp32")
    with LiveServer(create_app(engine, settings_)) as server:
        yield server


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]  # fmt: skip


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda m: m.value)
def test_no_server_errors_and_responses_match_the_schema(live, mode):
    """Valid requests (positive) and requests breaking the schema (negative) for every operation:
    ``examples(25)`` cases each run, spread over the operations."""
    schema = schemathesis.openapi.from_url(live.url + "/openapi.json")

    @given(case=schema.as_strategy(mode))
    # derandomized: CI runs the same cases every time (it found top_p=3e-308 emptying the
    # nucleus once, now fixed in fast/generate.py); HYPOTHESIS_PROFILE=thorough explores 12x more
    @settings(max_examples=examples(25), deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    def run(case):
        case.call_and_validate(checks=CHECKS, timeout=30)

    run()


def test_schema_declares_the_error_bodies(live):
    import httpx

    spec = httpx.get(live.url + "/openapi.json").json()
    chat = spec["paths"]["/v1/chat/completions"]["post"]["responses"]
    for status in ("400", "401", "404", "422", "429"):
        ref = chat[status]["content"]["application/json"]["schema"]["$ref"]
        assert ref.endswith("/ErrorResponse")
    assert "text/event-stream" in chat["200"]["content"]
    assert set(spec["components"]["schemas"]["ErrorDetail"]["properties"]) == {
        "message", "type", "param", "code"
    }  # fmt: skip
