"""GET /api/v2/openapi.json and /api/v2/docs: a valid document that matches the routes."""
import re

import pytest
from openapi_core.validation.response.exceptions import InvalidData
from openapi_spec_validator import validate

from potpie_flask import openapi, representation

from . import contract
from .helpers import LIST, create

DOCUMENTED_METHODS = {"get", "post", "put", "patch", "delete"}


def _flask_path(rule):
    return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)


def test_document_is_served_without_a_key_and_passes_the_validator(client):
    r = client.get("/api/v2/openapi.json")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json; charset=utf-8"
    document = r.get_json()
    validate(document)
    assert document["openapi"] == "3.0.3"
    assert document == openapi.build()
    assert document["components"]["securitySchemes"] == {"ApiKeyAuth": {
        "type": "apiKey", "in": "header", "name": "x-api-key",
        "description": "`sk-` followed by 64 lowercase hex characters."}}
    assert document["security"] == [{"ApiKeyAuth": []}]


def test_document_is_built_once(app):
    assert openapi.document() is openapi.document()


def test_every_route_and_method_is_documented_and_nothing_else(app):
    routes = {(_flask_path(rule), method.lower())
              for rule in app.url_map.iter_rules() if rule.endpoint != "static"
              for method in rule.methods if method.lower() in DOCUMENTED_METHODS}
    documented = {(path, method) for path, item in openapi.build()["paths"].items()
                  for method in item if method in DOCUMENTED_METHODS}
    assert routes == documented


def test_request_bodies_and_queries_come_from_the_validating_schemas():
    document = openapi.build()
    schemas = document["components"]["schemas"]
    save = document["paths"]["/api/v2/integrations/save"]["post"]
    assert save["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/IntegrationSave"}
    assert set(schemas["IntegrationSave"]["properties"]) == {
        "name", "integration_type", "status", "active", "unique_identifier", "auth_data",
        "scope_data", "metadata"}
    assert schemas["IntegrationSave"]["additionalProperties"] is False
    assert set(schemas["IntegrationChange"]["properties"]) == {
        "name", "status", "active", "auth_data", "scope_data", "metadata"}
    # What the schema refuses beyond lengths is said too: a blank tag, a name's stripping.
    assert schemas["Metadata"]["properties"]["tags"]["items"]["pattern"] == r"\S"
    assert "stripped" in schemas["IntegrationSave"]["properties"]["name"]["description"]
    listed = document["paths"]["/api/v2/integrations"]["get"]["parameters"]
    assert {p["name"]: p["schema"] for p in listed}["limit"] == {
        "default": 50, "type": "integer", "minimum": 1, "maximum": 200}
    assert schemas["AuthData"]["properties"]["access_token"]["writeOnly"] is True


def test_envelopes_list_their_keys_in_the_order_the_answers_send_them(api):
    iid = create(api, name="In order", integration_type="jira")["integration_id"]
    answers = {
        "IntegrationEnvelope": api.get(f"{LIST}/{iid}"),
        "IntegrationListEnvelope": api.get(LIST),
        "AuditTrailEnvelope": api.get(f"{LIST}/{iid}/audit"),
        "CloneTemplateEnvelope": api.get(f"{LIST}/{iid}/template"),
        "FailureEnvelope": api.get(f"{LIST}/00000000-0000-4000-8000-000000000000"),
    }
    schemas = openapi.build()["components"]["schemas"]
    documented = {name: list(schemas[name]["properties"]) for name in answers}
    assert documented == {name: list(r.get_json()) for name, r in answers.items()}
    assert documented["IntegrationListEnvelope"] == ["success", "data", "error", "pagination"]


@pytest.mark.parametrize("path, status, headers", [
    ("/api/v2/integrations/save", "401", {"WWW-Authenticate"}),
    ("/api/v2/integrations", "429", {"Retry-After"}),
    ("/api/v2/integrations/{integration_id}", "503", {"Retry-After"}),
])
def test_documented_headers(path, status, headers):
    document = openapi.build()
    item = document["paths"][path]
    ref = next(op for m, op in item.items() if m in DOCUMENTED_METHODS)["responses"][status]
    name = ref["$ref"].rsplit("/", 1)[1]
    assert set(document["components"]["responses"][name]["headers"]) == headers


def test_the_description_names_the_headers_every_answer_carries(client):
    description = client.get("/api/v2/openapi.json").get_json()["info"]["description"]
    for header in ("X-Request-ID", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"):
        assert f"`{header}`" in description


def test_docs_page_needs_no_key_and_references_no_other_host(client):
    r = client.get("/api/v2/docs")
    assert r.status_code == 200
    assert r.mimetype == "text/html"
    page = r.get_data(as_text=True)
    assert "SwaggerUIBundle" in page and "validatorUrl: null" in page
    assert not re.search(r"(?i)(?:https?:)?//[a-z0-9-]+(?:\.[a-z0-9-]+)+", page), (
        "page references another host")
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sources and all(s.startswith("/api/v2/docs/assets/") for s in sources)
    for source in sources:
        asset = client.get(source)
        assert asset.status_code == 200 and len(asset.data) > 0
    assert '"/api/v2/openapi.json"' in page


def test_an_asset_answers_revalidation_and_ranges_as_documented(client):
    """The contract client checks each answer, 206, 304 and 416 included, against the document."""
    path = "/api/v2/docs/assets/swagger-ui.css"
    whole = client.get(path)
    assert client.get(path, headers={"If-None-Match": whole.headers["ETag"]}).status_code == 304
    part = client.get(path, headers={"Range": "bytes=0-9"})
    assert (part.status_code, part.data) == (206, whole.data[:10])
    beyond = client.get(path, headers={"Range": f"bytes={len(whole.data) + 10}-"})
    assert (beyond.status_code, beyond.get_json()) == (416, {"detail": "Requested Range Not Satisfiable"})


def test_unknown_asset_is_404(client):
    r = client.get("/api/v2/docs/assets/index.html")
    assert r.status_code == 404
    assert r.get_json() == {"detail": "Not Found"}


def test_contract_check_catches_a_response_that_drifts_from_the_document(api, monkeypatch):
    iid = create(api, name="Drift", integration_type="jira")["integration_id"]
    original = representation.integration_of

    def with_a_secret(values):
        return {**original(values), "access_token": "leaked"}

    monkeypatch.setattr(representation, "integration_of", with_a_secret)
    with pytest.raises(InvalidData):
        api.get(f"{LIST}/{iid}")
