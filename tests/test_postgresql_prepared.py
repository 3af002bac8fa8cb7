"""PostgreSQL: each pooled connection prepares the service's statements once, or never when off."""
import peewee
import pytest

from potpie_flask import create_app
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
    with app.app_context(), database.connection_context():
        key = create_key(OWNER)[1]
        owner_of(key)
        owner_of(key)
        statements = prepared_on_this_connection()
        lookups = [s for s in statements if '"key_hash" = $1' in s]
        assert len(lookups) == 1
        assert all(s.startswith("PREPARE potpie_") for s in statements)


@on_postgresql
def test_a_prepared_write_rolled_back_with_its_transaction_can_run_again(app):
    with app.app_context(), database.connection_context():
        with pytest.raises(peewee.IntegrityError):
            with database.atomic():
                # Prepared by its first use, then refused by the unique index at COMMIT.
                INSERT_KEY.write(**key_row("f" * 64))
                INSERT_KEY.write(**key_row("f" * 64))
        assert ApiKey.select().where(ApiKey.key_hash == "f" * 64).count() == 0
        with database.atomic():
            INSERT_KEY.write(**key_row("f" * 64))
        assert ApiKey.select().where(ApiKey.key_hash == "f" * 64).count() == 1


@on_postgresql
def test_switched_off_nothing_is_prepared_and_every_route_still_answers(db_settings,
                                                                      instance_path, monkeypatch):
    monkeypatch.setenv("POTPIE_ENCRYPTION_KEYS", db_settings["POTPIE_ENCRYPTION_KEYS"])
    app = create_app({"DATABASE_URL": db_settings["DATABASE_URL"], "RATELIMIT_ENABLED": False,
                      "DATABASE_PREPARED_STATEMENTS": False})
    with app.app_context():
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
    with app.app_context(), database.connection_context():
        owner_of(key)
        assert prepared_on_this_connection() == []
    database.close_all()
