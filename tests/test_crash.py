"""Crash safety: SIGKILL a worker, or the whole server, under a concurrent save load.

SPEC section 7: a 2xx means the change is committed, and the audit row is written
in the same transaction as its change. After the crash and a restart, every
acknowledged save is there with exactly its content, every integration has its
audit row and no audit row lacks its change.
"""
import json
import os
import signal

import pytest

from potpie_flask.models import AuditEvent, Integration

from .faults import SaveLoad, wait_until, workers
from .servers import Gunicorn, server_env

pytestmark = pytest.mark.slow


def assert_stored_exactly(app, load):
    """Compare the database with what the load was told (service layer: the vault decrypts)."""
    vault = app.extensions["potpie_vault"]
    with app.app_context():
        rows = {row.unique_identifier: row for row in Integration.select()}
        events = list(AuditEvent.select())
    for ident, (body, integration_id) in load.acknowledged.items():
        assert ident in rows, f"acknowledged save {ident} was lost"
        assert rows[ident].id == integration_id
    for ident, row in rows.items():
        # A save whose answer was lost in the crash may or may not have committed; if it
        # did, it is whole. Nothing else may appear.
        body = (load.acknowledged.get(ident) or (load.unanswered.get(ident),))[0]
        assert body is not None, f"{ident} was stored but never sent"
        assert (row.name, row.integration_type, row.status, row.active) == (
            body["name"], "sentry", body["status"], True)
        assert row.scope_data()["org_slug"] == body["scope_data"]["org_slug"]
        assert row.metadata()["description"] == body["metadata"]["description"]
        assert row.metadata()["tags"] == body["metadata"]["tags"]
        assert (row.token_type, row.auth_scope) == ("Bearer", "read write")
        secrets = vault.open(row.credentials)
        assert secrets == {"access_token": body["auth_data"]["access_token"],
                           "refresh_token": body["auth_data"]["refresh_token"]}
    by_id = {row.id: row for row in rows.values()}
    audited = {}
    for event in events:
        assert event.integration_id in by_id, "an audit row describes a change that is not there"
        assert event.action == "create"
        changes = json.loads(event.changes)
        assert changes["name"]["new"] == by_id[event.integration_id].name
        assert changes["auth_data"] == {"old": None, "new": "[redacted]"}
        audited[event.integration_id] = audited.get(event.integration_id, 0) + 1
    assert audited == dict.fromkeys(by_id, 1), "every integration has exactly its create row"


def read_back(server, key, load, sample=10):
    for ident, (body, integration_id) in list(load.acknowledged.items())[:sample]:
        status, answer, _ = server.request("GET", f"/api/v2/integrations/{integration_id}", key=key)
        assert status == 200
        assert answer["data"]["name"] == body["name"]
        assert answer["data"]["has_auth_data"] is True


def test_sigkill_of_one_worker_loses_nothing_acknowledged(app, api_key, instance_path, db_settings):
    env = server_env(instance_path, db_settings)
    with Gunicorn(env, workers=2) as server:
        victim = sorted(workers(server, 2))[0]
        load = SaveLoad(server.url, api_key, threads=4, per_thread=60, tag="worker").start()
        try:
            wait_until(lambda: load.answered >= 20, 30, "20 acknowledged saves")
            os.kill(victim, signal.SIGKILL)
            answered_at_kill = load.answered
            wait_until(lambda: load.answered >= answered_at_kill + 30, 30,
                       "saves acknowledged after the kill")
        finally:
            load.stop()
        pids = workers(server, 2)
        assert victim not in pids, "gunicorn replaced the killed worker"
        assert not load.failed, load.failed[:3]
    assert_stored_exactly(app, load)
    with Gunicorn(env, workers=2) as server:
        read_back(server, api_key, load)


def test_sigkill_of_the_whole_server_loses_nothing_acknowledged(
        app, api_key, instance_path, db_settings):
    env = server_env(instance_path, db_settings)
    server = Gunicorn(env, workers=2)
    load = SaveLoad(server.url, api_key, threads=4, per_thread=60, tag="server").start()
    try:
        wait_until(lambda: load.answered >= 40, 30, "40 acknowledged saves")
        os.killpg(server.proc.pid, signal.SIGKILL)  # master and workers at once
        server.proc.wait(10)
    finally:
        try:
            load.stop()
        finally:
            server.stop()  # even when a load thread did not stop: no gunicorn left behind
    assert not load.failed, load.failed[:3]
    assert_stored_exactly(app, load)
    with Gunicorn(env, workers=2) as restarted:
        read_back(restarted, api_key, load)
        assert restarted.request("GET", "/readyz")[0] == 200
