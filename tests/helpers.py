"""Shared bodies and small helpers for the resource-route tests."""
import contextlib
import fcntl
import json
import re
import sqlite3
import threading

import psycopg2

from potpie_flask import integrations, representation
from potpie_flask.db import database
from potpie_flask.models import AuditEvent, Integration

LIST = "/api/v2/integrations"
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
NOT_FOUND = {"success": False, "data": None, "error": "Integration not found"}
# A well-formed UUID4 that no test ever creates.
NEVER_EXISTED = "00000000-0000-4000-8000-000000000000"

FULL_BODY = {
    "name": "Production Sentry",
    "integration_type": "sentry",
    "status": "active",
    "unique_identifier": "prod-sentry",
    "auth_data": {"access_token": "sentry_token_here", "token_type": "Bearer",
                  "scope": "org:read"},
    "scope_data": {"org_slug": "my-company"},
    "metadata": {"instance_name": "Production Sentry", "created_via": "api",
                 "description": "Error monitoring", "tags": ["production", "monitoring"]},
}


def one(iid):
    return f"{LIST}/{iid}"


def create(api, **fields):
    """Save an integration and return its representation."""
    r = api.save(fields)
    assert r.status_code == 200, r.get_json()
    return r.get_json()["data"]


def problem(loc, msg, type_, **ctx):
    entry = {"loc": loc, "msg": msg, "type": type_}
    if ctx:
        entry["ctx"] = ctx
    return entry


def own_connection(app):
    """A DB-API connection of the test's own to the app's database, and its placeholder."""
    url = app.config["DATABASE_URL"]
    if url.startswith("sqlite:///"):
        return sqlite3.connect(url[len("sqlite:///"):], timeout=0), "?"
    return psycopg2.connect(url), "%s"


@contextlib.contextmanager
def audit_inserts_refused(app):
    """A trigger refuses every audit INSERT ("audit storage failed") until the block ends."""
    conn, _ = own_connection(app)
    if isinstance(conn, sqlite3.Connection):
        create = ("CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_event "
                  "BEGIN SELECT RAISE(ABORT, 'audit storage failed'); END",)
        drop = ("DROP TRIGGER IF EXISTS refuse_audit",)
    else:
        create = ("CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS "
                  "$$ BEGIN RAISE EXCEPTION 'audit storage failed'; END $$",
                  "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_event "
                  "FOR EACH ROW EXECUTE FUNCTION refuse_audit()")
        drop = ("DROP TRIGGER IF EXISTS refuse_audit ON audit_event",
                "DROP FUNCTION IF EXISTS refuse_audit()")
    try:
        with conn:
            for statement in create:
                conn.cursor().execute(statement)
        yield
    finally:
        with conn:
            for statement in drop:
                conn.cursor().execute(statement)
        conn.close()


def assert_sqlite_write_locks_free(app):
    """Another writer gets both of SQLite's locks at once: the writers' lock file and SQLite's own."""
    path = app.config["DATABASE_URL"][len("sqlite:///"):]
    with open(path + "-writers.lock", "ab") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        other, _ = own_connection(app)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.rollback()
        finally:
            other.close()
            fcntl.flock(lock_file, fcntl.LOCK_UN)


@contextlib.contextmanager
def holding_the_write_lock_of(app, backend, integration_id):
    """Another writer holds what a changing save must wait for: SQLite's lock, or the row.

    Yields that writer's connection and its placeholder.
    """
    holder, placeholder = own_connection(app)
    if backend == "sqlite":
        holder.execute("BEGIN IMMEDIATE")
    else:
        holder.cursor().execute(
            f"SELECT 1 FROM integration WHERE id = {placeholder} FOR UPDATE", (integration_id,))
    try:
        yield holder, placeholder
    finally:
        holder.rollback()
        holder.close()


def run_bounded(call, timeout=10):
    """call() on a thread; its result, or a failure if it has not returned within `timeout`."""
    done = []
    worker = threading.Thread(target=lambda: done.append(call()), daemon=True)
    worker.start()
    worker.join(timeout)
    assert done, f"still waiting after {timeout} s"
    return done[0]


def another_writer_after(monkeypatch, app, step, sql, *params):
    """Commit `sql` (? placeholders) on a connection of its own after `integrations.<step>` ran.

    That step reads the row with no lock; the write lands before the operation locks it.
    """
    original = getattr(integrations, step)

    def then_another_writer(*args):
        result = original(*args)
        writer, placeholder = own_connection(app)
        try:
            writer.cursor().execute(sql.replace("?", placeholder), params)
            writer.commit()
        finally:
            writer.close()
        return result

    monkeypatch.setattr(integrations, step, then_another_writer)


def never_worked_out_twice(monkeypatch):
    """Fail the test if an operation works a change out again under the lock."""
    def refused(*args):
        raise AssertionError("the change worked out on the read ahead was not used")

    monkeypatch.setattr(integrations, "_change", refused)


def never_locked(monkeypatch):
    """Fail the test if an operation takes the locked path (its one-statement write failed)."""
    def refused(*args):
        raise AssertionError("the change was not written in one statement")

    monkeypatch.setattr(integrations, "_change_locked", refused)


def assert_one_statement_change(app, data, request_id, changes):
    """The answered row is the stored one, with one update audited as the locked path would."""
    with app.app_context():
        stored = Integration.get_by_id(data["integration_id"])
        assert data == representation.integration(stored)
        [update] = AuditEvent.select().where(AuditEvent.action == "update")
        assert (update.integration_id, update.owner, update.timestamp, update.request_id,
                json.loads(update.changes)) == (
            stored.id, stored.owner, stored.updated_at, request_id, changes)
        return stored


def assert_deactivated_over_the_newer_row(response, app, integration_id):
    """`active: false` was applied to the row as the other writer left it, and audited alone."""
    assert response.status_code == 200
    data = response.get_json()["data"]
    assert (data["status"], data["active"]) == ("pending", False)
    with app.app_context():
        stored = Integration.get_by_id(integration_id)
        assert (stored.status, stored.active) == ("pending", False)
        last = AuditEvent.select().order_by(AuditEvent.id.desc()).get()
        assert json.loads(last.changes) == {"active": {"old": True, "new": False}}


def statements_sent(monkeypatch):
    """The SQL of each statement the app's database runs from now on (a list that grows)."""
    sent = []
    database_class = type(database.obj)
    execute_sql = database_class.execute_sql

    def recorded(self, sql, params=None, *args, **kwargs):
        sent.append(sql)
        return execute_sql(self, sql, params, *args, **kwargs)

    monkeypatch.setattr(database_class, "execute_sql", recorded)
    return sent


def one_session_waits_for(watcher, pid):
    """Whether exactly one PostgreSQL session waits for a lock the session `pid` holds."""
    with watcher.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity "
                       "WHERE %s = ANY(pg_blocking_pids(pid))", (pid,))
        return cursor.fetchone()[0] == 1
