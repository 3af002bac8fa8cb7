"""POST /api/v2/integrations/save: create, upsert, conflicts, envelope (SPEC sections 4-6)."""
import json
import logging
import uuid

import pytest

from potpie_flask.logs import JsonFormatter, log
from potpie_flask.models import AuditEvent, Integration

from .conftest import OWNER
from .faults import SAVE
from .helpers import (TIMESTAMP, another_writer_after, assert_deactivated_over_the_newer_row,
                      assert_sqlite_write_locks_free, audit_inserts_refused,
                      assert_one_statement_change, holding_the_write_lock_of, never_locked,
                      never_worked_out_twice, run_bounded)

# The body of the original documentation's curl example, verbatim.
DOCUMENTED_BODY = {
    "name": "Production Sentry",
    "integration_type": "sentry",
    "status": "active",
    "auth_data": {"access_token": "sentry_token_here", "token_type": "Bearer"},
    "scope_data": {"org_slug": "my-company"},
    "metadata": {"instance_name": "Production Sentry", "created_via": "api",
                 "tags": ["production", "monitoring"]},
}


def test_documented_example_is_saved_with_the_eleven_documented_fields(api, app):
    r = api.save(DOCUMENTED_BODY)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json; charset=utf-8"
    body = r.get_json()
    assert body["success"] is True and body["error"] is None
    data = body["data"]
    iid = data["integration_id"]
    assert uuid.UUID(iid).version == 4 and iid == str(uuid.UUID(iid))
    assert data == {
        "integration_id": iid,
        "name": "Production Sentry",
        "integration_type": "sentry",
        "status": "active",
        "active": True,
        "unique_identifier": f"sentry-{iid}",
        "created_by": OWNER,
        "created_at": data["created_at"],
        "updated_at": data["created_at"],
        "has_auth_data": True,
        "has_scope_data": True,
        "metadata": {"instance_name": "Production Sentry", "created_via": "api",
                     "version": None, "description": None,
                     "tags": ["production", "monitoring"]},
        "scope_data": {"org_slug": "my-company", "installation_id": None,
                       "workspace_id": None, "project_id": None},
        "auth_data": {"token_type": "Bearer", "expires_at": None, "scope": None},
    }
    assert TIMESTAMP.fullmatch(data["created_at"])
    with app.app_context():
        assert Integration.select().count() == 1
        assert [e.action for e in AuditEvent.select()] == ["create"]


def test_minimal_body_gets_every_default(api):
    r = api.save({"name": "  Jira  ", "integration_type": "jira"})
    assert r.status_code == 200
    data = r.get_json()["data"]
    assert data["name"] == "Jira"
    assert data["status"] == "active" and data["active"] is True
    assert data["unique_identifier"] == f"jira-{data['integration_id']}"
    assert data["has_auth_data"] is False and data["has_scope_data"] is False
    assert data["metadata"] == {"instance_name": "Jira", "created_via": "manual",
                                "version": None, "description": None, "tags": []}
    assert data["scope_data"] == dict.fromkeys(
        ["org_slug", "installation_id", "workspace_id", "project_id"])
    assert data["auth_data"] == {"token_type": None, "expires_at": None, "scope": None}


def test_upsert_by_unique_identifier_updates_in_place_and_keeps_credentials(api, app):
    first = api.save({**DOCUMENTED_BODY, "unique_identifier": "prod-sentry"}).get_json()["data"]
    r = api.save({"name": "Production Sentry", "integration_type": "sentry",
                  "unique_identifier": "prod-sentry", "status": "error"})
    assert r.status_code == 200
    second = r.get_json()["data"]
    assert second["integration_id"] == first["integration_id"]
    assert second["created_at"] == first["created_at"]
    assert second["updated_at"] > first["updated_at"]
    assert second["status"] == "error"
    assert second["has_auth_data"] is True
    assert second["auth_data"] == first["auth_data"]
    assert second["scope_data"] == first["scope_data"]
    assert second["metadata"] == first["metadata"]
    with app.app_context():
        row = Integration.get()
        assert app.extensions["potpie_vault"].open(row.credentials) == {
            "access_token": "sentry_token_here"}
        changes = [(e.action, e.changes) for e in AuditEvent.select().order_by(AuditEvent.id)]
        assert [a for a, _ in changes] == ["create", "update"]
        assert json.loads(changes[1][1]) == {"status": {"old": "active", "new": "error"}}


def test_nested_object_given_replaces_the_stored_one_whole(api):
    api.save({**DOCUMENTED_BODY, "unique_identifier": "u1",
              "scope_data": {"org_slug": "acme", "project_id": "p1"}})
    data = api.save({"name": "Production Sentry", "integration_type": "sentry",
                     "unique_identifier": "u1", "scope_data": {"workspace_id": "w1"},
                     "metadata": {"description": "new"}}).get_json()["data"]
    assert data["scope_data"] == {"org_slug": None, "installation_id": None,
                                  "workspace_id": "w1", "project_id": None}
    assert data["has_scope_data"] is True
    assert data["metadata"] == {"instance_name": "Production Sentry", "created_via": "manual",
                                "version": None, "description": "new", "tags": []}


def test_save_that_changes_nothing_keeps_updated_at_and_writes_no_audit_row(api, app):
    body = {**DOCUMENTED_BODY, "unique_identifier": "same"}
    first = api.save(body).get_json()["data"]
    again = api.save(body)
    assert again.status_code == 200
    assert again.get_json()["data"] == first
    with app.app_context():
        assert AuditEvent.select().count() == 1


def test_a_save_that_changes_nothing_needs_no_write_lock(short_busy_timeout, app, api, backend):
    body = {**DOCUMENTED_BODY, "unique_identifier": "resync"}
    first = api.save(body).get_json()["data"]
    with holding_the_write_lock_of(app, backend, first["integration_id"]):
        # A re-save of the same data answers from what is stored, with no transaction...
        again = run_bounded(lambda: api.save(body))
        assert again.status_code == 200 and again.get_json()["data"] == first
        if backend == "sqlite":
            # ...while a save that changes something still queues for the lock (503 here).
            changed = run_bounded(lambda: api.save({**body, "status": "error"}))
            assert changed.status_code == 503
    assert api.save({**body, "status": "error"}).get_json()["data"]["status"] == "error"
    with app.app_context():
        assert [e.action for e in AuditEvent.select().order_by(AuditEvent.id)] == [
            "create", "update"]


def test_an_upsert_writes_the_change_worked_out_on_the_read_ahead(api, monkeypatch):
    body = {**DOCUMENTED_BODY, "unique_identifier": "ahead"}
    api.save(body)
    never_worked_out_twice(monkeypatch)
    r = api.save({**body, "status": "error", "auth_data": {"access_token": "rotated"}})
    assert r.status_code == 200 and r.get_json()["data"]["status"] == "error"


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_postgresql_writes_an_upsert_nobody_raced_in_one_statement_with_its_audit(
        api, app, monkeypatch):
    body = {**DOCUMENTED_BODY, "unique_identifier": "one-statement"}
    first = api.save(body).get_json()["data"]
    never_locked(monkeypatch)
    r = api.post(SAVE, json={**body, "auth_data": {"access_token": "rotated"}},
                 headers={"X-Request-ID": "upsert-one"})
    assert r.status_code == 200
    assert r.get_json()["data"]["integration_id"] == first["integration_id"]
    stored = assert_one_statement_change(
        app, r.get_json()["data"], "upsert-one",
        {"auth_data": {"old": "[redacted]", "new": "[redacted]"}})
    assert app.extensions["potpie_vault"].open(stored.credentials) == {"access_token": "rotated"}


def test_a_row_written_between_the_read_ahead_and_the_lock_is_changed_as_it_now_is(
        api, app, monkeypatch):
    body = {key: value for key, value in DOCUMENTED_BODY.items() if key != "status"}
    body["unique_identifier"] = "raced"
    first = api.save(body).get_json()["data"]
    another_writer_after(monkeypatch, app, "_read_ahead",
                         "UPDATE integration SET status = 'pending' WHERE id = ?",
                         first["integration_id"])
    assert_deactivated_over_the_newer_row(api.save({**body, "active": False}), app,
                                          first["integration_id"])


def test_changed_credentials_are_audited_redacted(api, app):
    body = {**DOCUMENTED_BODY, "unique_identifier": "creds"}
    api.save(body)
    api.save({**body, "auth_data": {"access_token": "rotated-token", "expires_at":
                                    "2030-01-01T12:00:00+02:00"}})
    data = api.get("/api/v2/integrations").get_json()["data"][0]
    assert data["auth_data"] == {"token_type": "Bearer",
                                 "expires_at": "2030-01-01T10:00:00.000000Z", "scope": None}
    with app.app_context():
        update = AuditEvent.select().where(AuditEvent.action == "update").get()
        assert json.loads(update.changes) == {"auth_data": {"old": "[redacted]", "new": "[redacted]"}}


def test_refresh_token_alone_is_stored_but_is_not_an_access_token(api):
    data = api.save({"name": "Slack", "integration_type": "slack",
                     "auth_data": {"refresh_token": "r1", "scope": "chat:write"}}
                    ).get_json()["data"]
    assert data["has_auth_data"] is False
    assert data["auth_data"] == {"token_type": "Bearer", "expires_at": None, "scope": "chat:write"}


def test_project_or_installation_alone_is_not_scope_data(api):
    data = api.save({"name": "GitHub", "integration_type": "github",
                     "scope_data": {"installation_id": "1", "project_id": "2"}}
                    ).get_json()["data"]
    assert data["has_scope_data"] is False


def test_name_clash_is_409_case_insensitive_after_stripping(api, app):
    api.save({"name": "Production Sentry", "integration_type": "sentry"})
    r = api.save({"name": "  production SENTRY ", "integration_type": "jira"})
    assert r.status_code == 409
    assert r.get_json() == {"success": False, "data": None,
                            "error": "Failed to save integration: "
                                     "Integration with this name already exists"}
    with app.app_context():
        assert Integration.select().count() == 1
        assert AuditEvent.select().count() == 1


def test_whitespace_around_the_name_is_stripped_tabs_and_line_ends_too(api):
    r = api.save({"name": "\t Sentry \r\n", "integration_type": "sentry"})
    assert (r.status_code, r.get_json()["data"]["name"]) == (200, "Sentry")


def test_a_refused_save_leaves_the_connection_usable_for_the_next_one(api, app):
    # On PostgreSQL the failing INSERT travels with COMMIT; the pooled connection
    # must come back out of the aborted transaction for the next request.
    api.save({"name": "Taken", "integration_type": "jira"})
    assert api.save({"name": "taken", "integration_type": "jira"}).status_code == 409
    r = api.save({"name": "Free", "integration_type": "jira"})
    assert r.status_code == 200
    assert api.get(f"/api/v2/integrations/{r.get_json()['data']['integration_id']}"
                   ).get_json()["data"]["name"] == "Free"
    with app.app_context():
        assert sorted(row.name for row in Integration.select()) == ["Free", "Taken"]
        assert AuditEvent.select().count() == 2


def test_a_create_whose_audit_insert_fails_writes_nothing_and_holds_no_lock(api, app, backend):
    with audit_inserts_refused(app):
        r = api.save({"name": "Unaudited", "integration_type": "jira"})
    assert r.status_code == 500
    assert r.get_json() == {"success": False, "data": None,
                            "error": "Failed to save integration: Internal server error"}
    with app.app_context():
        assert Integration.select().count() == 0
        assert AuditEvent.select().count() == 0
    if backend == "sqlite":
        assert_sqlite_write_locks_free(app)
    saved = api.save({"name": "Unaudited", "integration_type": "jira"})
    assert saved.status_code == 200
    with app.app_context():
        assert [row.name for row in Integration.select()] == ["Unaudited"]
        assert [e.action for e in AuditEvent.select()] == ["create"]


def test_percent_signs_quotes_and_semicolons_are_stored_verbatim(api):
    # Writes are bound on the client and may share one message with COMMIT.
    name = "100% '; DROP TABLE integration; -- %s %(x)s"
    r = api.save({"name": name, "integration_type": "jira",
                  "metadata": {"description": "50%% \\ \"q\" ;", "tags": ["%s"]}})
    assert r.status_code == 200
    read = api.get(f"/api/v2/integrations/{r.get_json()['data']['integration_id']}")
    assert read.get_json()["data"]["name"] == name
    assert read.get_json()["data"]["metadata"]["description"] == "50%% \\ \"q\" ;"
    assert read.get_json()["data"]["metadata"]["tags"] == ["%s"]


def test_renaming_through_upsert_onto_another_name_is_409(api, app):
    a = api.save({"name": "A", "integration_type": "jira", "unique_identifier": "a"})
    api.save({"name": "B", "integration_type": "jira", "unique_identifier": "b"})
    r = api.save({"name": "b", "integration_type": "jira", "unique_identifier": "a"})
    assert r.status_code == 409
    assert r.get_json()["error"] == ("Failed to save integration: "
                                     "Integration with this name already exists")
    a = a.get_json()["data"]
    assert api.get(f"/api/v2/integrations/{a['integration_id']}").get_json()["data"] == a
    with app.app_context():
        assert AuditEvent.select().where(AuditEvent.action == "update").count() == 0
    # PostgreSQL refused the one-statement write; its connection serves the next save.
    assert api.save({"name": "C", "integration_type": "jira",
                     "unique_identifier": "a"}).status_code == 200


def test_saving_again_under_its_own_name_in_another_case_is_not_a_clash(api):
    first = api.save({"name": "Prod", "integration_type": "jira", "unique_identifier": "p"})
    r = api.save({"name": "PROD", "integration_type": "jira", "unique_identifier": "p"})
    assert r.status_code == 200
    assert r.get_json()["data"]["integration_id"] == first.get_json()["data"]["integration_id"]
    assert r.get_json()["data"]["name"] == "PROD"


def test_type_change_through_unique_identifier_is_409(api, app):
    api.save({"name": "X", "integration_type": "jira", "unique_identifier": "x"})
    r = api.save({"name": "X", "integration_type": "linear", "unique_identifier": "x"})
    assert r.status_code == 409
    assert r.get_json() == {"success": False, "data": None,
                            "error": "Failed to save integration: "
                                     "integration_type of an existing integration "
                                     "cannot be changed"}
    with app.app_context():
        assert Integration.get().integration_type == "jira"


def test_two_owners_may_share_names_and_identifiers(api, other_api):
    body = {"name": "Shared", "integration_type": "slack", "unique_identifier": "shared"}
    mine = api.save(body).get_json()["data"]
    theirs = other_api.save(body).get_json()["data"]
    assert mine["integration_id"] != theirs["integration_id"]
    assert (mine["created_by"], theirs["created_by"]) == ("user_abc123", "user_other")


def test_no_raw_error_text_reaches_a_500(api, app, monkeypatch):
    from potpie_flask import integrations

    def explode(*args, **kwargs):
        raise RuntimeError("SELECT secret FROM somewhere")

    monkeypatch.setattr(integrations, "_new_row", explode)
    lines = []

    class Kept(logging.Handler):
        def emit(self, record):
            lines.append(json.loads(JsonFormatter().format(record)))

    kept = Kept()
    log.addHandler(kept)
    try:
        r = api.post(SAVE, json={"name": "X", "integration_type": "jira"},
                     headers={"X-Request-ID": "boom-1"})
    finally:
        log.removeHandler(kept)
    assert r.status_code == 500
    assert r.get_json() == {"success": False, "data": None,
                            "error": "Failed to save integration: Internal server error"}
    # The raw text goes to the log instead, under the request's id (SPEC section 4).
    [error] = [line for line in lines if line.get("message") == "unexpected error"]
    assert error["request_id"] == "boom-1" and error["level"] == "error"
    assert "RuntimeError: SELECT secret FROM somewhere" in error["exception"]


@pytest.mark.parametrize("part", [{"scope": "repo"}, {"token_type": "token"},
                                  {"expires_at": "2031-01-01T00:00:00Z"}])
def test_a_change_of_only_a_non_secret_part_of_auth_data_is_audited_redacted(api, app, part):
    """SPEC section 6: auth_data is [redacted] on both sides whenever any part of it changed."""
    body = {**DOCUMENTED_BODY, "unique_identifier": "creds-part",
            "auth_data": {"access_token": "same-token"}}
    iid = api.save(body).get_json()["data"]["integration_id"]
    r = api.patch(f"/api/v2/integrations/{iid}",
                  json={"auth_data": {"access_token": "same-token", **part}})
    assert r.status_code == 200
    with app.app_context():
        update = AuditEvent.select().where(AuditEvent.action == "update").get()
        assert json.loads(update.changes) == {"auth_data": {"old": "[redacted]",
                                                            "new": "[redacted]"}}
