"""Property-based run of schemathesis against the app in-process: no 5xx, nothing off the document.

Every operation of the document, on both backends, with a bounded and derandomized
number of examples so the run stays short and repeatable.
"""
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance,
                                               response_headers_conformance,
                                               response_schema_conformance,
                                               status_code_conformance)

from potpie_flask import integrations, openapi
from potpie_flask.db import database

from .conftest import OWNER

MAX_EXAMPLES = 30
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
TARGET = {"name": "Fuzz target", "integration_type": "sentry", "unique_identifier": "fuzz-target",
          "auth_data": {"access_token": "t"}, "scope_data": {"org_slug": "acme"}}


@pytest.fixture
def fuzzed_app(app):
    """The app with one real integration, so id routes also answer 200, not only 404."""
    with app.app_context():
        row = integrations.save(OWNER, dict(TARGET), app.extensions["potpie_vault"])
    app.config["FUZZ_TARGET_ID"] = row.id
    return app


DOCUMENT = openapi.build()
SCHEMA = schemathesis.openapi.from_dict(DOCUMENT)


def _runs():
    """(path, method, mode): positive data everywhere, negative where there is input to break."""
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            yield path, method, GenerationMode.POSITIVE
            if item.get("parameters") or operation.get("parameters") or \
                    operation.get("requestBody"):
                yield path, method, GenerationMode.NEGATIVE


@pytest.mark.parametrize("path, method, mode", list(_runs()),
                         ids=lambda v: v.value if isinstance(v, GenerationMode) else None)
def test_api_conforms_to_its_document(fuzzed_app, api_key, path, method, mode):
    examples = []

    @given(case=SCHEMA[path][method.upper()].as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    def run(case):
        examples.append(case)
        if "integration_id" in (case.path_parameters or {}):
            _aim_at_the_target(case, fuzzed_app)
        response = case.call(app=fuzzed_app, headers={"x-api-key": api_key})
        case.validate_response(response, checks=CHECKS)

    run()
    print(f"\nschemathesis {method.upper()} {path} {mode.value}: {len(examples)} examples")
    assert examples


def _aim_at_the_target(case, app):
    """Point well-formed ids at the real integration (recreated after a DELETE); keep the rest."""
    generated = case.path_parameters["integration_id"]
    if not integrations._INTEGRATION_ID.fullmatch(generated):
        return
    with app.app_context(), database.connection_context():
        row = integrations.save(OWNER, dict(TARGET), app.extensions["potpie_vault"])
    case.path_parameters["integration_id"] = row.id
