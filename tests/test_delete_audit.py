"""DELETE /api/v2/integrations/<id> and GET .../audit (SPEC section 6)."""
import datetime as dt

import peewee
import pytest

from potpie_flask import integrations
from potpie_flask.models import AuditEvent, Integration

from .conftest import OWNER
from .faults import SAVE
from .helpers import (FULL_BODY, NEVER_EXISTED, NOT_FOUND, TIMESTAMP, audit_inserts_refused,
                      create, one, problem, statements_sent)

REDACTED = "[redacted]"


def audit(iid):
    return one(iid) + "/audit"


def test_delete_is_204_with_no_body_and_then_404(api, app):
    saved = create(api, **FULL_BODY)
    r = api.delete(one(saved["integration_id"]))
    assert r.status_code == 204
    assert r.data == b""
    assert "Content-Type" not in r.headers
    assert api.get(one(saved["integration_id"])).get_json() == NOT_FOUND
    again = api.delete(one(saved["integration_id"]))
    assert again.status_code == 404
    assert again.get_json() == NOT_FOUND
    with app.app_context():
        assert Integration.select().count() == 0
        assert [e.action for e in AuditEvent.select().order_by(AuditEvent.id)] == [
            "create", "delete"]


def test_delete_frees_the_name_and_the_identifier(api):
    saved = create(api, **FULL_BODY)
    api.delete(one(saved["integration_id"]))
    again = create(api, **FULL_BODY)
    assert again["integration_id"] != saved["integration_id"]


@pytest.mark.parametrize("iid", [NEVER_EXISTED, "nope"])
def test_delete_of_unknown_id_is_404(api, iid):
    r = api.delete(one(iid))
    assert r.status_code == 404
    assert r.get_json() == NOT_FOUND


def test_audit_trail_records_create_update_delete_newest_first(api):
    saved = create(api, **FULL_BODY)
    iid = saved["integration_id"]
    api.patch(one(iid), json={"name": "Renamed", "auth_data": {"access_token": "t2"}},
              headers={"X-Request-ID": "req-update"})
    api.delete(one(iid), headers={"X-Request-ID": "req-delete"})
    r = api.get(audit(iid))
    assert r.status_code == 200
    body = r.get_json()
    assert body["success"] is True and body["error"] is None
    assert body["pagination"] == {"limit": 50, "offset": 0, "total": 3}
    delete, update, create_ = body["data"]
    for entry in body["data"]:
        assert TIMESTAMP.fullmatch(entry["timestamp"])
    assert delete["timestamp"] >= update["timestamp"] >= create_["timestamp"]
    state = {
        "name": "Renamed",
        "integration_type": "sentry",
        "status": "active",
        "active": True,
        "unique_identifier": "prod-sentry",
        "scope_data": {"org_slug": "my-company", "installation_id": None,
                       "workspace_id": None, "project_id": None},
        "metadata": {"instance_name": "Production Sentry", "created_via": "api",
                     "version": None, "description": "Error monitoring",
                     "tags": ["production", "monitoring"]},
    }
    assert delete == {
        "timestamp": delete["timestamp"], "user": OWNER, "action": "delete",
        "resource_type": "integration", "integration_id": iid, "request_id": "req-delete",
        "changes": {**{key: {"old": value, "new": None} for key, value in state.items()},
                    "auth_data": {"old": REDACTED, "new": None}},
    }
    assert update == {
        "timestamp": update["timestamp"], "user": OWNER, "action": "update",
        "resource_type": "integration", "integration_id": iid, "request_id": "req-update",
        "changes": {"name": {"old": "Production Sentry", "new": "Renamed"},
                    "auth_data": {"old": REDACTED, "new": REDACTED}},
    }
    assert create_["action"] == "create"
    assert create_["changes"] == {
        **{key: {"old": None, "new": value}
           for key, value in {**state, "name": "Production Sentry"}.items()},
        "auth_data": {"old": None, "new": REDACTED},
    }


def test_audit_never_shows_a_secret(api):
    saved = create(api, **FULL_BODY)
    api.patch(one(saved["integration_id"]), json={"auth_data": {"code": "secret-code"}})
    text = api.get(audit(saved["integration_id"])).get_data(as_text=True)
    assert "sentry_token_here" not in text and "secret-code" not in text


def test_audit_is_paginated(api):
    saved = create(api, name="P", integration_type="jira")
    for status in ("inactive", "pending", "error"):
        api.patch(one(saved["integration_id"]), json={"status": status})
    r = api.get(audit(saved["integration_id"]) + "?limit=2&offset=1")
    assert r.status_code == 200
    body = r.get_json()
    assert body["pagination"] == {"limit": 2, "offset": 1, "total": 4}
    assert [e["changes"].get("status", {}).get("new") for e in body["data"]] == [
        "pending", "inactive"]


def test_an_audit_page_is_read_with_its_total_in_one_statement(api, monkeypatch):
    saved = create(api, name="P", integration_type="jira")
    api.patch(one(saved["integration_id"]), json={"status": "inactive"})
    sent = statements_sent(monkeypatch)
    r = api.get(audit(saved["integration_id"]) + "?limit=1")
    assert ([e["action"] for e in r.get_json()["data"]], r.get_json()["pagination"]) == (
        ["update"], {"limit": 1, "offset": 0, "total": 2})
    assert len(sent) == 2  # the key lookup, then the page with its total
    del sent[:]
    # A page past the end has no row to carry the total: it is counted on its own.
    r = api.get(audit(saved["integration_id"]) + "?offset=2")
    assert (r.get_json()["data"], r.get_json()["pagination"]["total"]) == ([], 2)
    assert len(sent) == 3


def test_a_delete_is_audited_after_the_last_change_even_if_the_clock_steps_back(api,
                                                                                 monkeypatch):
    saved = create(api, name="P", integration_type="jira")
    changed = api.patch(one(saved["integration_id"]), json={"status": "inactive"})
    last_change = dt.datetime.fromisoformat(changed.get_json()["data"]["updated_at"][:-1])
    monkeypatch.setattr(integrations, "utcnow", lambda: last_change - dt.timedelta(hours=1))
    assert api.delete(one(saved["integration_id"])).status_code == 204
    trail = api.get(audit(saved["integration_id"])).get_json()["data"]
    assert [entry["action"] for entry in trail] == ["delete", "update", "create"]
    assert trail[0]["timestamp"] == (last_change + dt.timedelta(microseconds=1)).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")


def test_audit_query_is_validated(api):
    saved = create(api, name="P", integration_type="jira")
    r = api.get(audit(saved["integration_id"]) + "?limit=500&status=active")
    assert r.status_code == 422
    assert sorted(r.get_json()["detail"], key=lambda p: p["loc"]) == [
        problem(["query", "limit"], "ensure this value is less than or equal to 200",
                "value_error.number.not_le", limit_value=200),
        problem(["query", "status"], "extra fields not permitted", "value_error.extra"),
    ]


def test_audit_offset_is_bounded_by_what_the_databases_take(api):
    saved = create(api, name="P", integration_type="jira")
    r = api.get(audit(saved["integration_id"]) + "?offset=9223372036854775807")
    assert r.status_code == 200
    assert r.get_json()["data"] == []
    assert r.get_json()["pagination"] == {"limit": 50, "offset": 9223372036854775807, "total": 1}
    r = api.get(audit(saved["integration_id"]) + "?offset=9223372036854775808")
    assert r.status_code == 422
    assert r.get_json() == {"detail": [problem(
        ["query", "offset"], "ensure this value is less than or equal to 9223372036854775807",
        "value_error.number.not_le", limit_value=9223372036854775807)]}


@pytest.mark.parametrize("iid", [NEVER_EXISTED, "nope"])
def test_audit_of_an_integration_never_held_is_404(api, iid):
    r = api.get(audit(iid))
    assert r.status_code == 404
    assert r.get_json() == NOT_FOUND


def test_a_failed_change_leaves_no_audit_row(api, app):
    """The audit row and the change share one transaction: neither exists without the other."""
    saved = create(api, **FULL_BODY)
    with audit_inserts_refused(app):
        # With auth_data a change is worked out in Python on both databases (without it,
        # PostgreSQL's is one statement: the next test).
        r = api.patch(one(saved["integration_id"]),
                      json={"name": "Changed", "auth_data": {"access_token": "new"}})
        # Refused by the database, not a name another integration holds: not a 409.
        assert (r.status_code, r.get_json()) == (500, {
            "success": False, "data": None,
            "error": "Failed to update integration: Internal server error"})
        r = api.delete(one(saved["integration_id"]))
        assert (r.status_code, r.get_json()) == (500, {
            "success": False, "data": None,
            "error": "Failed to delete integration: Internal server error"})
    assert api.get(one(saved["integration_id"])).get_json()["data"] == saved
    with app.app_context():
        assert [e.action for e in AuditEvent.select()] == ["create"]


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
@pytest.mark.parametrize("one_statement_of, method, path, body", [
    ("_written_if_unchanged", "post", lambda iid: SAVE, {**FULL_BODY, "name": "Changed"}),
    ("_changed_by_one_statement", "patch", one, {"name": "Changed"}),
], ids=["upsert", "change"])
def test_postgresql_one_statement_write_whose_audit_insert_fails_changes_nothing(
        api, app, monkeypatch, one_statement_of, method, path, body):

    saved = create(api, **FULL_BODY)
    raised = []
    one_statement = getattr(integrations, one_statement_of)

    def spied(*args):
        try:
            return one_statement(*args)
        except Exception as exc:
            raised.append(type(exc))
            raise

    # The locked path would fail on the trigger too: make sure this one did.
    monkeypatch.setattr(integrations, one_statement_of, spied)
    with audit_inserts_refused(app):
        r = getattr(api, method)(path(saved["integration_id"]), json=body)
    assert r.status_code == 500
    assert raised == [peewee.InternalError]
    verb = "save" if method == "post" else "update"
    assert r.get_json() == {"success": False, "data": None,
                            "error": f"Failed to {verb} integration: Internal server error"}
    assert api.get(one(saved["integration_id"])).get_json()["data"] == saved
    with app.app_context():
        assert [e.action for e in AuditEvent.select()] == ["create"]
