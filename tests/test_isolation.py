"""Owner isolation: another owner's integration answers exactly like one that never existed."""
import pytest

from potpie_flask.models import AuditEvent, Integration

from .helpers import FULL_BODY, LIST, NEVER_EXISTED, create, one

# (method, path suffix, json body) of every route that takes an integration id.
ROUTES = [
    ("get", "", None),
    ("patch", "", {"name": "Hijacked", "status": "error"}),
    ("put", "", {"name": "Hijacked", "status": "error"}),
    ("delete", "", None),
    ("get", "/audit", None),
    ("get", "/template", None),
]


def _snapshot(app):
    with app.app_context():
        return (list(Integration.select().dicts()),
                list(AuditEvent.select().order_by(AuditEvent.id).dicts()))


@pytest.mark.parametrize("method, suffix, body", ROUTES)
def test_another_owners_integration_is_404_like_one_that_never_existed(
        api, other_api, app, method, suffix, body):
    saved = create(api, **FULL_BODY)
    before = _snapshot(app)
    kwargs = {} if body is None else {"json": body}
    theirs = getattr(other_api, method)(one(saved["integration_id"]) + suffix, **kwargs)
    never = getattr(other_api, method)(one(NEVER_EXISTED) + suffix, **kwargs)
    assert theirs.status_code == never.status_code == 404
    assert theirs.get_json() == never.get_json() == {
        "success": False, "data": None, "error": "Integration not found"}
    assert _snapshot(app) == before
    assert api.get(one(saved["integration_id"])).get_json()["data"] == saved


def test_audit_of_a_deleted_integration_stays_private(api, other_api):
    saved = create(api, **FULL_BODY)
    api.delete(one(saved["integration_id"]))
    assert api.get(one(saved["integration_id"]) + "/audit").status_code == 200
    r = other_api.get(one(saved["integration_id"]) + "/audit")
    assert r.status_code == 404
    assert r.get_json() == {"success": False, "data": None, "error": "Integration not found"}


def test_list_shows_only_the_owners_integrations(api, other_api):
    create(api, **FULL_BODY)
    r = other_api.get(LIST + "?org_slug=my-company")
    assert r.status_code == 200
    assert r.get_json() == {"success": True, "data": [], "error": None,
                            "pagination": {"limit": 50, "offset": 0, "total": 0}}
    mine = create(other_api, name="Theirs", integration_type="jira")
    assert other_api.get(LIST).get_json()["data"] == [mine]
    assert [i["name"] for i in api.get(LIST).get_json()["data"]] == ["Production Sentry"]


def test_save_with_another_owners_identifier_creates_a_separate_integration(api, other_api, app):
    saved = create(api, **FULL_BODY)
    theirs = create(other_api, name="Mine now", integration_type="sentry",
                    unique_identifier="prod-sentry")
    assert theirs["integration_id"] != saved["integration_id"]
    assert api.get(one(saved["integration_id"])).get_json()["data"] == saved
