"""GET, PATCH and PUT /api/v2/integrations/<id> (SPEC section 6)."""
import json
import threading

import pytest

from potpie_flask import integrations
from potpie_flask.models import AuditEvent, Integration

from .faults import wait_until
from .helpers import (FULL_BODY, NEVER_EXISTED, NOT_FOUND, another_writer_after,
                      assert_deactivated_over_the_newer_row, create, holding_the_write_lock_of,
                      never_worked_out_twice, one, one_session_waits_for, own_connection,
                      problem, run_bounded)

CHANGE_METHODS = ["patch", "put"]


def test_read_returns_the_same_object_as_save(api):
    saved = create(api, **FULL_BODY)
    r = api.get(one(saved["integration_id"]))
    assert r.status_code == 200
    assert r.get_json() == {"success": True, "data": saved, "error": None}


@pytest.mark.parametrize("iid", [NEVER_EXISTED, "not-a-uuid", NEVER_EXISTED.upper()])
def test_read_unknown_or_malformed_id_is_404(api, iid):
    r = api.get(one(iid))
    assert r.status_code == 404
    assert r.get_json() == NOT_FOUND


@pytest.mark.parametrize("method", CHANGE_METHODS)
def test_change_some_fields_keeps_the_rest(api, app, method):
    saved = create(api, **FULL_BODY)
    r = getattr(api, method)(one(saved["integration_id"]),
                             json={"name": " Renamed ", "status": "inactive", "active": False})
    assert r.status_code == 200
    data = r.get_json()["data"]
    assert data == {**saved, "name": "Renamed", "status": "inactive", "active": False,
                    "updated_at": data["updated_at"]}
    assert data["updated_at"] > saved["updated_at"]
    assert api.get(one(saved["integration_id"])).get_json()["data"] == data
    # The stored name key moved with the name: the new name is taken, the old one free.
    assert api.save({"name": "RENAMED", "integration_type": "jira"}).status_code == 409
    assert api.save({"name": "production sentry", "integration_type": "jira"}).status_code == 200
    with app.app_context():
        update = AuditEvent.select().where(AuditEvent.action == "update").get()
        assert json.loads(update.changes) == {
            "name": {"old": "Production Sentry", "new": "Renamed"},
            "status": {"old": "active", "new": "inactive"},
            "active": {"old": True, "new": False},
        }


@pytest.mark.parametrize("method", CHANGE_METHODS)
def test_nested_objects_given_replace_the_stored_ones_whole(api, app, method):
    saved = create(api, **FULL_BODY)
    r = getattr(api, method)(one(saved["integration_id"]), json={
        "scope_data": {"workspace_id": "w1"},
        "metadata": {"tags": ["new"]},
        "auth_data": {"refresh_token": "r2"},
    })
    assert r.status_code == 200
    data = r.get_json()["data"]
    assert data["scope_data"] == {"org_slug": None, "installation_id": None,
                                  "workspace_id": "w1", "project_id": None}
    assert data["metadata"] == {"instance_name": "Production Sentry", "created_via": "manual",
                                "version": None, "description": None, "tags": ["new"]}
    assert data["auth_data"] == {"token_type": "Bearer", "expires_at": None, "scope": None}
    assert data["has_auth_data"] is False and data["has_scope_data"] is True
    assert api.get(one(saved["integration_id"])).get_json()["data"] == data
    with app.app_context():
        assert app.extensions["potpie_vault"].open(Integration.get().credentials) == {
            "refresh_token": "r2"}
        changes = json.loads(AuditEvent.select().where(AuditEvent.action == "update")
                             .get().changes)
        assert changes["auth_data"] == {"old": "[redacted]", "new": "[redacted]"}


def test_change_that_changes_nothing_keeps_updated_at_and_writes_no_audit(api, app):
    saved = create(api, **FULL_BODY)
    r = api.patch(one(saved["integration_id"]), json={"name": "Production Sentry"})
    assert r.status_code == 200
    assert r.get_json()["data"] == saved
    with app.app_context():
        assert AuditEvent.select().count() == 1


# The rules that depend on the stored row. PostgreSQL works a change without auth_data out in
# SQL (change_statement.py), SQLite in Python: both must give these answers.

def _updates(app):
    with app.app_context():
        return [(json.loads(event.changes), event.timestamp) for event in
                AuditEvent.select().where(AuditEvent.action == "update").order_by(AuditEvent.id)]


def test_metadata_without_instance_name_takes_the_stored_name_and_is_audited_whole(api, app):
    saved = create(api, **{**FULL_BODY, "metadata": {**FULL_BODY["metadata"],
                                                     "instance_name": "Sentry EU"}})
    bystander = create(api, name="Bystander", integration_type="jira", status="error",
                       scope_data={"org_slug": "b"}, metadata={"description": "b"})
    text = 'a "quoted" back\\slash, ünï and\na new line'
    r = api.patch(one(saved["integration_id"]), json={
        "status": "active", "scope_data": {"project_id": "p1"},
        "metadata": {"description": text}})
    assert r.status_code == 200
    data = r.get_json()["data"]
    # The stored name, not the stored instance_name.
    metadata = {"instance_name": "Production Sentry", "created_via": "manual", "version": None,
                "description": text, "tags": []}
    scope = {"org_slug": None, "installation_id": None, "workspace_id": None, "project_id": "p1"}
    assert data == {**saved, "metadata": metadata, "scope_data": scope, "has_scope_data": False,
                    "updated_at": data["updated_at"]}
    assert api.get(one(saved["integration_id"])).get_json()["data"] == data
    [(changes, timestamp)] = _updates(app)
    # The status given as stored is no change; the others are listed in SPEC's field order.
    assert list(changes) == ["scope_data", "metadata"]
    assert changes == {"scope_data": {"old": saved["scope_data"], "new": scope},
                       "metadata": {"old": saved["metadata"], "new": metadata}}
    assert timestamp.isoformat() + "Z" == data["updated_at"]
    audit = api.get(one(saved["integration_id"]) + "/audit").get_json()["data"]
    assert audit[0]["changes"] == changes and audit[0]["timestamp"] == data["updated_at"]
    # The change wrote its own row alone.
    assert api.get(one(bystander["integration_id"])).get_json()["data"] == bystander


def test_a_name_given_with_metadata_is_its_instance_name(api, app):
    saved = create(api, **FULL_BODY)
    r = api.patch(one(saved["integration_id"]), json={"name": "Renamed", "metadata": {}})
    assert r.status_code == 200
    assert r.get_json()["data"]["metadata"]["instance_name"] == "Renamed"
    [(changes, _)] = _updates(app)
    assert list(changes) == ["name", "metadata"]
    assert changes["metadata"]["new"] == {"instance_name": "Renamed", "created_via": "manual",
                                          "version": None, "description": None, "tags": []}


def test_tags_stored_with_spaces_equal_the_same_tags_given(api, app):
    # Rows written before orjson kept json.dumps's spaces in their tags.
    saved = create(api, **FULL_BODY)
    with app.app_context():
        Integration.update(tags=json.dumps(["production", "monitoring"])).execute()
    r = api.patch(one(saved["integration_id"]), json={"metadata": FULL_BODY["metadata"]})
    assert r.status_code == 200 and r.get_json()["data"] == saved
    assert _updates(app) == []
    r = api.patch(one(saved["integration_id"]), json={
        "metadata": {**FULL_BODY["metadata"], "version": "2"}})
    assert r.status_code == 200
    [(changes, _)] = _updates(app)
    assert changes == {"metadata": {"old": saved["metadata"],
                                    "new": {**saved["metadata"], "version": "2"}}}


def test_each_change_is_later_than_the_last_even_with_the_clock_behind(api, app):
    saved = create(api, **FULL_BODY)
    ahead = "2999-01-01 00:00:00"
    with app.app_context():
        Integration.update(updated_at=ahead).execute()
    for status in ("error", "inactive"):
        assert api.patch(one(saved["integration_id"]), json={"status": status}).status_code == 200
    assert [timestamp.isoformat() for _, timestamp in _updates(app)] == [
        "2999-01-01T00:00:00.000001", "2999-01-01T00:00:00.000002"]


SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
POSTGRESQL_ONLY = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
TAKE_THE_NAME_WANTED = "UPDATE integration SET name = 'Wanted', name_key = 'wanted' WHERE id = ?"


# SQLite: a change is worked out on a read with no lock, then written under the write lock
# (which holds up every writer) if the row is still as read.

@SQLITE_ONLY
def test_sqlite_a_change_that_changes_nothing_needs_no_write_lock(short_busy_timeout, app, api,
                                                                  backend):
    saved = create(api, **FULL_BODY)
    with holding_the_write_lock_of(app, backend, saved["integration_id"]):
        same = run_bounded(
            lambda: api.patch(one(saved["integration_id"]), json={"status": "active"}))
        assert same.status_code == 200 and same.get_json()["data"] == saved
        changed = run_bounded(
            lambda: api.patch(one(saved["integration_id"]), json={"status": "error"}))
        assert changed.status_code == 503


@SQLITE_ONLY
def test_a_row_written_between_the_read_ahead_and_the_lock_is_changed_as_it_now_is(
        api, app, monkeypatch):
    saved = create(api, **FULL_BODY)
    another_writer_after(monkeypatch, app, "_ahead_of",
                         "UPDATE integration SET status = 'pending' WHERE id = ?",
                         saved["integration_id"])
    assert_deactivated_over_the_newer_row(
        api.patch(one(saved["integration_id"]), json={"active": False}), app,
        saved["integration_id"])


@SQLITE_ONLY
def test_a_change_writes_what_it_worked_out_on_the_read_ahead(api, monkeypatch):
    saved = create(api, **FULL_BODY)
    never_worked_out_twice(monkeypatch)
    r = api.patch(one(saved["integration_id"]), json={"status": "error"})
    assert r.status_code == 200 and r.get_json()["data"]["status"] == "error"


@SQLITE_ONLY
def test_a_row_deleted_between_the_read_ahead_and_the_lock_is_404(api, app, monkeypatch):
    saved = create(api, **FULL_BODY)
    another_writer_after(monkeypatch, app, "_ahead_of",
                         "DELETE FROM integration WHERE id = ?", saved["integration_id"])
    r = api.patch(one(saved["integration_id"]), json={"status": "error"})
    assert_deleted_before_the_change(r, app)


@SQLITE_ONLY
def test_a_name_taken_between_the_read_ahead_and_the_lock_is_409(api, app, monkeypatch):
    other = create(api, name="Other", integration_type="jira")
    saved = create(api, **FULL_BODY)
    another_writer_after(monkeypatch, app, "_ahead_of", TAKE_THE_NAME_WANTED,
                         other["integration_id"])
    r = api.patch(one(saved["integration_id"]), json={"name": "wanted"})
    assert_name_clash_changed_nothing(r, api, app, saved)


# PostgreSQL: a change locks its row (in one statement, or with auth_data by reading it
# locked), so it waits for any writer of that row and then changes the row as that writer
# left it.

@POSTGRESQL_ONLY
def test_postgresql_a_change_waits_for_the_rows_writer_and_changes_the_row_as_it_now_is(
        api, app):
    saved = create(api, **FULL_BODY)
    r = changed_after_the_writer_it_waited_for(
        app, lambda: api.patch(one(saved["integration_id"]), json={"active": False}),
        saved["integration_id"], "UPDATE integration SET status = 'pending' WHERE id = ?",
        saved["integration_id"])
    assert_deactivated_over_the_newer_row(r, app, saved["integration_id"])


@POSTGRESQL_ONLY
def test_postgresql_a_change_compares_and_audits_the_row_its_writer_left(api, app):
    saved = create(api, **FULL_BODY)
    r = changed_after_the_writer_it_waited_for(
        app, lambda: api.patch(one(saved["integration_id"]),
                               json={"metadata": {**FULL_BODY["metadata"],
                                                  "description": "mine"}}),
        saved["integration_id"], "UPDATE integration SET description = 'theirs', "
        "updated_at = '2999-01-01 00:00:00' WHERE id = ?", saved["integration_id"])
    assert r.status_code == 200
    assert r.get_json()["data"]["updated_at"] == "2999-01-01T00:00:00.000001Z"
    [(changes, _)] = _updates(app)
    assert changes == {"metadata": {"old": {**saved["metadata"], "description": "theirs"},
                                    "new": {**saved["metadata"], "description": "mine"}}}


@POSTGRESQL_ONLY
def test_postgresql_a_row_deleted_while_its_change_waited_is_404(api, app):
    saved = create(api, **FULL_BODY)
    r = changed_after_the_writer_it_waited_for(
        app, lambda: api.patch(one(saved["integration_id"]), json={"status": "error"}),
        saved["integration_id"], "DELETE FROM integration WHERE id = ?",
        saved["integration_id"])
    assert_deleted_before_the_change(r, app)


@POSTGRESQL_ONLY
def test_postgresql_a_name_taken_while_the_change_waited_is_409(api, app):
    other = create(api, name="Other", integration_type="jira")
    saved = create(api, **FULL_BODY)
    r = changed_after_the_writer_it_waited_for(
        app, lambda: api.patch(one(saved["integration_id"]), json={"name": "wanted"}),
        saved["integration_id"], TAKE_THE_NAME_WANTED, other["integration_id"])
    assert_name_clash_changed_nothing(r, api, app, saved)


@POSTGRESQL_ONLY
def test_postgresql_a_change_that_changes_nothing_waits_for_the_row_too(api, app):
    saved = create(api, **FULL_BODY)
    r = changed_after_the_writer_it_waited_for(
        app, lambda: api.patch(one(saved["integration_id"]), json={"status": "active"}),
        saved["integration_id"], "SELECT 1")
    assert r.status_code == 200 and r.get_json()["data"] == saved
    with app.app_context():
        assert AuditEvent.select().count() == 1


def changed_after_the_writer_it_waited_for(app, change, integration_id, sql, *params):
    """Lock the row; once `change()` waits for it, commit `sql` (? placeholders); its answer."""
    watcher, _ = own_connection(app)
    watcher.autocommit = True
    answers = []
    try:
        with holding_the_write_lock_of(app, "postgresql", integration_id) as (holder,
                                                                             placeholder):
            with holder.cursor() as cur:
                cur.execute("SELECT pg_backend_pid()")
                [holder_pid] = cur.fetchone()
            changing = threading.Thread(target=lambda: answers.append(change()), daemon=True)
            changing.start()
            wait_until(lambda: one_session_waits_for(watcher, holder_pid), 10,
                       "the change to wait for the row's lock")
            with holder.cursor() as cur:
                cur.execute(sql.replace("?", placeholder), params)
            holder.commit()
            changing.join(10)
    finally:
        watcher.close()
    assert answers, "the change did not finish within 10 s of the lock's release"
    return answers[0]


def assert_deleted_before_the_change(response, app):
    assert response.status_code == 404
    assert response.get_json() == NOT_FOUND
    with app.app_context():
        assert AuditEvent.select().where(AuditEvent.action == "update").count() == 0


def assert_name_clash_changed_nothing(response, api, app, saved):
    """409 with SPEC's message, the integration as it was, and no update audited."""
    assert response.status_code == 409
    assert response.get_json() == {"success": False, "data": None,
                                   "error": "Failed to update integration: "
                                            "Integration with this name already exists"}
    assert api.get(one(saved["integration_id"])).get_json()["data"] == saved
    with app.app_context():
        assert AuditEvent.select().where(AuditEvent.action == "update").count() == 0


@pytest.mark.parametrize("method", CHANGE_METHODS)
def test_type_and_identifier_are_not_accepted(api, app, method):
    saved = create(api, **FULL_BODY)
    r = getattr(api, method)(one(saved["integration_id"]), json={
        "integration_type": "jira", "unique_identifier": "other", "status": "error"})
    assert r.status_code == 422
    # marshmallow finds unknown keys through a set: their order is not defined.
    assert sorted(r.get_json()["detail"], key=lambda p: p["loc"]) == [
        problem(["body", "integration_type"], "extra fields not permitted", "value_error.extra"),
        problem(["body", "unique_identifier"], "extra fields not permitted", "value_error.extra"),
    ]
    assert api.get(one(saved["integration_id"])).get_json()["data"] == saved


@pytest.mark.parametrize("method", CHANGE_METHODS)
@pytest.mark.parametrize("body", [{}, {"metadata": None, "auth_data": None}])
def test_empty_body_is_422(api, method, body):
    saved = create(api, **FULL_BODY)
    r = getattr(api, method)(one(saved["integration_id"]), json=body)
    assert r.status_code == 422
    assert r.get_json() == {"detail": [
        {"loc": ["body"], "msg": "at least one field is required", "type": "value_error"}]}


@pytest.mark.parametrize("body, problems", [
    ({"name": None}, [problem(["body", "name"], "none is not an allowed value",
                              "type_error.none.not_allowed")]),
    ({"name": "   "}, [problem(["body", "name"], "ensure this value has at least 1 characters",
                               "value_error.any_str.min_length", limit_value=1)]),
    ({"active": "true", "status": None}, [
        problem(["body", "status"], "none is not an allowed value", "type_error.none.not_allowed"),
        problem(["body", "active"], "value could not be parsed to a boolean", "type_error.bool"),
    ]),
    ({"auth_data": {"scope": "x"}}, [
        problem(["body", "auth_data"], "Provide at least one of: access_token, refresh_token, "
                                       "or code", "value_error")]),
    ({"scope_data": {"org": "x"}}, [
        problem(["body", "scope_data", "org"], "extra fields not permitted", "value_error.extra")]),
    ([], [problem(["body"], "value is not a valid dict", "type_error.dict")]),
])
def test_invalid_change_is_422_and_changes_nothing(api, app, body, problems):
    saved = create(api, **FULL_BODY)
    r = api.patch(one(saved["integration_id"]), json=body)
    assert r.status_code == 422
    assert r.get_json() == {"detail": problems}
    assert api.get(one(saved["integration_id"])).get_json()["data"] == saved


def test_change_needs_a_json_body(api):
    saved = create(api, **FULL_BODY)
    r = api.patch(one(saved["integration_id"]), data="name=x",
                  content_type="application/x-www-form-urlencoded")
    assert r.status_code == 415
    assert r.get_json() == {"detail": "Content-Type must be application/json"}


@pytest.mark.parametrize("method", CHANGE_METHODS)
def test_name_clash_is_409_and_changes_nothing(api, app, method):
    create(api, name="Taken", integration_type="jira")
    saved = create(api, **FULL_BODY)
    r = getattr(api, method)(one(saved["integration_id"]),
                             json={"name": " TAKEN ", "status": "error"})
    assert_name_clash_changed_nothing(r, api, app, saved)


def test_renaming_to_its_own_name_in_another_case_is_not_a_clash(api):
    saved = create(api, **FULL_BODY)
    r = api.put(one(saved["integration_id"]), json={"name": "PRODUCTION sentry"})
    assert r.status_code == 200
    assert r.get_json()["data"]["name"] == "PRODUCTION sentry"


@pytest.mark.parametrize("method", CHANGE_METHODS)
def test_change_of_unknown_id_is_404(api, method):
    r = getattr(api, method)(one(NEVER_EXISTED), json={"status": "error"})
    assert r.status_code == 404
    assert r.get_json() == NOT_FOUND


def test_every_column_a_change_can_touch_is_in_an_update_group():
    never_changed = {"id", "owner", "integration_type", "unique_identifier", "created_at",
                     "updated_at"}
    grouped = [name for group in integrations._COLUMN_GROUPS for name in group]
    assert len(grouped) == len(set(grouped))
    assert set(grouped) | never_changed == set(Integration._meta.fields)


def test_json_stored_by_the_standard_library_encoder_reads_and_changes_alike(api, app):
    # Rows and audit entries written before orjson kept json.dumps's spaces.
    saved = create(api, **FULL_BODY)
    vault = app.extensions["potpie_vault"]
    secrets = json.dumps({"access_token": "sentry_token_here"}, sort_keys=True)
    with app.app_context():
        Integration.update(
            tags=json.dumps(["production", "monitoring"]),
            credentials=vault._fernet.encrypt(secrets.encode()).decode(),
        ).where(Integration.id == saved["integration_id"]).execute()
        AuditEvent.update(changes=json.dumps({"name": {"old": None, "new": "Ünïcode"}})).execute()
    assert api.get(one(saved["integration_id"])).get_json()["data"] == saved
    assert api.get(one(saved["integration_id"]) + "/audit").get_json()["data"][0]["changes"] == {
        "name": {"old": None, "new": "Ünïcode"}}
    # The same credentials again are no change; only the status is.
    r = api.patch(one(saved["integration_id"]),
                  json={"status": "error", "auth_data": FULL_BODY["auth_data"],
                        "metadata": FULL_BODY["metadata"]})
    assert r.status_code == 200
    with app.app_context():
        update = AuditEvent.select().where(AuditEvent.action == "update").get()
        assert json.loads(update.changes) == {"status": {"old": "active", "new": "error"}}


@pytest.mark.parametrize("change", [
    {"status": "error"},
    {"status": "error", "auth_data": {"access_token": "t2"}},
    # PostgreSQL's error quotes the row: the client's text must not make it a name clash.
    {"status": "error", "name": "name_key", "metadata": {"description": "name_key"}},
])
def test_a_change_refused_by_a_rule_other_than_the_name_index_is_500_not_409(api, app, backend,
                                                                             change):
    """Only the name index makes an update's IntegrityError the client's name clash."""
    saved = api.save({"name": "Ruled", "integration_type": "jira",
                      "auth_data": {"access_token": "t"}}).get_json()["data"]
    conn, _ = own_connection(app)
    if backend == "sqlite":
        add = ("CREATE TRIGGER no_error BEFORE UPDATE ON integration WHEN NEW.status = 'error' "
               "BEGIN SELECT RAISE(ABORT, 'no error status'); END")
        drop = "DROP TRIGGER IF EXISTS no_error"
    else:
        add = "ALTER TABLE integration ADD CONSTRAINT no_error CHECK (status <> 'error')"
        drop = "ALTER TABLE integration DROP CONSTRAINT IF EXISTS no_error"
    try:
        with conn:
            conn.cursor().execute(add)
        r = api.patch(one(saved["integration_id"]), json=change)
        assert (r.status_code, r.get_json()) == (500, {
            "success": False, "data": None,
            "error": "Failed to update integration: Internal server error"})
    finally:
        with conn:
            conn.cursor().execute(drop)
        conn.close()
    assert api.get(one(saved["integration_id"])).get_json()["data"] == saved
