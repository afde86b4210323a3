"""Schema-driven fuzzing of the HTTP API in process (schemathesis over the ASGI app, no network):
for a classifier, a masked-LM model, a NER and a QA model (tiny random ones), every operation of
the app's own /openapi.json gets generated valid and invalid requests, and every answer passes all
of schemathesis' checks: no 5xx, the status code is documented, the body conforms to the
documented schema, the content type is the documented one, invalid data is refused and valid
data accepted (413 counts as accepted: the token, item and body limits are the server's, and no
schema can say how many tokens a text holds). Bounded in examples and time (well under 60 s on 2
cores); the by-hand run with many more examples is in BENCHMARKS.md ("HTTP API fuzzing")."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="serving is an optional extra: pip install 'bertforge[serve]'")
schemathesis = pytest.importorskip("schemathesis", reason="the API fuzzing needs schemathesis (the test extra)")
from hypothesis import HealthCheck, settings  # noqa: E402

from bertforge.serve.app import create_app  # noqa: E402
from bertforge.serve.engine import Engine  # noqa: E402
from bertforge.serve.settings import ServeSettings  # noqa: E402

KINDS = ("classify", "pretraining", "ner", "qa")
LIMITS = ServeSettings(max_items=16, max_text_chars=2000, max_request_tokens=4096, max_body_bytes=100_000)
CONFIG = {
    "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "413"]}},
    "phases": {"stateful": {"enabled": False}},
}
"""All checks on. Valid data must get 2xx, or 413 past the server's size limits."""


def _make_model_dir():
    """The tiny-model builder of the unit tests (tests/unit is not on this directory's path)."""
    path = Path(__file__).parents[1] / "unit" / "test_serve_models.py"
    spec = importlib.util.spec_from_file_location("serve_models", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_model_dir


def load_schema(directory: Path, settings: ServeSettings = LIMITS):
    """The app on `directory`, as a schemathesis schema read from its own /openapi.json."""
    config = schemathesis.config.SchemathesisConfig.from_dict(CONFIG)
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(Engine(directory), settings), config=config)


@pytest.fixture(scope="module", params=KINDS)
def api_schema(request, tmp_path_factory):
    directory = _make_model_dir()(tmp_path_factory.mktemp("fuzz") / request.param, request.param)
    return load_schema(directory)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=25, deadline=2000, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_every_answer_conforms_to_the_schema(case):
    case.call_and_validate()
