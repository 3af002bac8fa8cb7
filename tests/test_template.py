"""GET /api/v2/integrations/<id>/template: a body POST /save accepts to create a copy."""
import pytest

from .helpers import FULL_BODY, NEVER_EXISTED, NOT_FOUND, create, one


def template(iid):
    return one(iid) + "/template"


def test_template_is_the_public_body_under_a_free_name(api):
    saved = create(api, **FULL_BODY)
    r = api.get(template(saved["integration_id"]))
    assert r.status_code == 200
    assert r.get_json() == {"success": True, "error": None, "data": {
        "name": "Production Sentry (copy)",
        "integration_type": "sentry",
        "status": "active",
        "active": True,
        "scope_data": saved["scope_data"],
        "metadata": saved["metadata"],
    }}


def test_save_accepts_the_template_and_creates_a_copy_without_credentials(api):
    saved = create(api, **FULL_BODY)
    body = api.get(template(saved["integration_id"])).get_json()["data"]
    assert "auth_data" not in body and "unique_identifier" not in body
    r = api.save(body)
    assert r.status_code == 200
    copy = r.get_json()["data"]
    assert copy["integration_id"] != saved["integration_id"]
    assert copy["unique_identifier"] == f"sentry-{copy['integration_id']}"
    assert copy["name"] == "Production Sentry (copy)"
    assert copy["has_auth_data"] is False
    assert copy["auth_data"] == {"token_type": None, "expires_at": None, "scope": None}
    assert (copy["scope_data"], copy["metadata"]) == (saved["scope_data"], saved["metadata"])
    # A second copy gets the next free name.
    again = api.get(template(saved["integration_id"])).get_json()["data"]
    assert again["name"] == "Production Sentry (copy 2)"
    assert api.save(again).status_code == 200


def test_template_of_a_name_at_the_length_limit_stays_within_it(api):
    saved = create(api, name="n" * 255, integration_type="jira")
    body = api.get(template(saved["integration_id"])).get_json()["data"]
    assert body["name"] == "n" * 248 + " (copy)"
    assert api.save(body).status_code == 200


@pytest.mark.parametrize("iid", [NEVER_EXISTED, "nope"])
def test_template_of_unknown_id_is_404(api, iid):
    r = api.get(template(iid))
    assert r.status_code == 404
    assert r.get_json() == NOT_FOUND
