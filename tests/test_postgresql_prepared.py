"""PostgreSQL: each pooled connection prepares the service's statements once, or never when off."""
import peewee
import pytest

from potpie_flask import create_app, migrations
from potpie_flask.auth import create_key, owner_of
from potpie_flask.db import database
from potpie_flask.models import ApiKey
from potpie_flask.postgresql import _numbered

from .conftest import OWNER
from .test_postgresql_batching import INSERT_KEY, key_row

on_postgresql = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)

BODY = {"name": "Prepared", "integration_type": "sentry",
        "auth_data": {"access_token": "tok"}, "unique_identifier": "prepared-1"}


def prepared_on_this_connection():
    cursor = database.execute_sql(
        "SELECT statement FROM pg_prepared_statements WHERE name LIKE 'potpie%%' ORDER BY name")
    return [row[0] for row in cursor.fetchall()]


def test_placeholders_are_numbered_and_escaped_percent_signs_restored():
    assert _numbered("SELECT 1 WHERE a = %s AND b LIKE 'x%%' AND c = %s") == (
        "SELECT 1 WHERE a = $1 AND b LIKE 'x%' AND c = $2", 2)
    assert _numbered("SELECT 1") == ("SELECT 1", 0)


@on_postgresql
def test_a_statement_is_prepared_once_per_connection_and_answers_the_same(app, api):
    first = api.save(BODY)
    assert first.status_code == 200
    assert api.save(BODY).json == first.json
    read = api.get(f"/api/v2/integrations/{first.json['data']['integration_id']}")
    assert read.status_code == 200 and read.json == first.json
    assert api.get("/api/v2/integrations").json["pagination"]["total"] == 1
    with app.app_context(), database.connection_context():
        # One thread, one pooled connection: the one every request above used.
        key = create_key(OWNER)[1]
        owner_of(key)
        owner_of(key)
        statements = prepared_on_this_connection()
    assert all(s.startswith("PREPARE potpie_") for s in statements)
    assert len([s for s in statements if '"key_hash" = $1' in s]) == 1
    for written in ('INSERT INTO "integration"', 'INSERT INTO "audit_event"',
                    'SELECT COUNT(*) FROM "integration"'):
        assert len([s for s in statements if written in s]) == 1, written
    # The upsert's unlocked look and its locked read.
    assert len([s for s in statements if '"unique_identifier" = $2' in s]) == 2


@on_postgresql
def test_a_statement_prepared_in_a_transaction_rolled_back_stays_prepared(app):
    with app.app_context(), database.connection_context():
        with pytest.raises(peewee.IntegrityError):
            with database.atomic():
                database.execute_sql("SELECT 1")  # BEGIN reaches the server first
                # Prepared inside the transaction, then refused by the unique index at COMMIT.
                INSERT_KEY.write(**key_row("f" * 64))
                INSERT_KEY.write(**key_row("f" * 64))
        assert ApiKey.select().where(ApiKey.key_hash == "f" * 64).count() == 0
        # PREPARE is not undone by ROLLBACK: the connection's record of it still holds.
        assert [s for s in prepared_on_this_connection() if 'INSERT INTO "api_key"' in s]
        with database.atomic():
            INSERT_KEY.write(**key_row("f" * 64))
        assert ApiKey.select().where(ApiKey.key_hash == "f" * 64).count() == 1


@on_postgresql
def test_switched_off_nothing_is_prepared_and_every_route_still_answers(db_settings,
                                                                      instance_path, monkeypatch):
    monkeypatch.setenv("POTPIE_ENCRYPTION_KEYS", db_settings["POTPIE_ENCRYPTION_KEYS"])
    app = create_app({"DATABASE_URL": db_settings["DATABASE_URL"], "RATELIMIT_ENABLED": False,
                      "DATABASE_PREPARED_STATEMENTS": False})
    with app.app_context(), database.connection_context():
        # Its own app, not the `app` fixture's: the schema must not depend on an earlier test.
        migrations.upgrade()
        key = create_key(OWNER)[1]
    client = app.test_client()
    headers = {"x-api-key": key}
    saved = client.post("/api/v2/integrations/save", json=BODY, headers=headers)
    assert saved.status_code == 200
    path = f"/api/v2/integrations/{saved.json['data']['integration_id']}"
    assert client.patch(path, json={"status": "inactive"}, headers=headers).status_code == 200
    assert client.get(path, headers=headers).json["data"]["status"] == "inactive"
    listed = client.get("/api/v2/integrations", headers=headers)
    assert listed.json["pagination"]["total"] == 1
    try:
        with app.app_context(), database.connection_context():
            owner_of(key)
            assert prepared_on_this_connection() == []
    finally:
        database.close_all()
