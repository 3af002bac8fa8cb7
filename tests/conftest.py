"""Fixtures: a fresh app per test on SQLite (a new file) and on PostgreSQL (a per-run database)."""
import os
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest
from cryptography.fernet import Fernet

from potpie_flask import create_app, migrations
from potpie_flask.auth import create_key
from potpie_flask.db import database
from potpie_flask.models import ALL_MODELS

from .contract import ContractClient
from .databases import run_admin

PG_URL_ENV = "POTPIE_TEST_DATABASE_URL"
OWNER = "user_abc123"
OTHER_OWNER = "user_other"


def _with_database(url, name):
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="session")
def pg_url():
    """A PostgreSQL database of this test run alone, dropped at the end; skip without one."""
    base = os.environ.get(PG_URL_ENV)
    if not base:
        pytest.skip(f"{PG_URL_ENV} is not set: no PostgreSQL to test against")
    admin, name = run_admin(base, "test")
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        try:
            yield _with_database(base, name)
        finally:
            with admin.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


@pytest.fixture(scope="session")
def pg_encryption_key():
    return Fernet.generate_key().decode()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request):
    """Run the test once per database backend."""
    return request.param


@pytest.fixture
def db_settings(backend, request, tmp_path):
    """DATABASE_URL and the matching environment for an app or a server of this backend."""
    if backend == "sqlite":
        return {"DATABASE_URL": "sqlite:///" + str(tmp_path / "instance" / "potpie.sqlite3")}
    url = request.getfixturevalue("pg_url")
    _empty_postgresql(url)
    return {"DATABASE_URL": url,
            "POTPIE_ENCRYPTION_KEYS": request.getfixturevalue("pg_encryption_key")}


def _empty_postgresql(url):
    """Bring the run's database to the current schema with no rows, for a test of its own."""
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            # A test that played a read-only standby and was killed midway left it so.
            cur.execute("SELECT current_database()")
            cur.execute(f'ALTER DATABASE "{cur.fetchone()[0]}" '
                        "RESET default_transaction_read_only")
            cur.execute("SELECT to_regclass('schema_version')")
            if cur.fetchone()[0] is not None:
                names = ", ".join(f'"{m._meta.table_name}"' for m in ALL_MODELS)
                cur.execute(f"TRUNCATE {names} RESTART IDENTITY")
    finally:
        conn.close()


@pytest.fixture
def instance_path(tmp_path, monkeypatch):
    """An instance folder of the test's own, and no database or key from the shell."""
    path = tmp_path / "instance"
    path.mkdir(exist_ok=True)
    monkeypatch.setenv("POTPIE_INSTANCE_PATH", str(path))
    for key in ("DATABASE_URL", "POTPIE_ENCRYPTION_KEYS"):
        monkeypatch.delenv(key, raising=False)
    return path


@pytest.fixture
def short_busy_timeout(monkeypatch):
    """SQLite writers give up after 200 ms (ask for it before `app`)."""
    monkeypatch.setenv("POTPIE_SQLITE_BUSY_TIMEOUT_MS", "200")


@pytest.fixture
def short_lock_timeout(monkeypatch):
    """PostgreSQL statements wait 200 ms for a lock (ask for it before `app`)."""
    monkeypatch.setenv("POTPIE_DATABASE_LOCK_TIMEOUT_MS", "200")


@pytest.fixture
def app(backend, db_settings, instance_path, monkeypatch):
    """A fresh app: a new SQLite file, or the run's PostgreSQL database emptied."""
    if "POTPIE_ENCRYPTION_KEYS" in db_settings:
        monkeypatch.setenv("POTPIE_ENCRYPTION_KEYS", db_settings["POTPIE_ENCRYPTION_KEYS"])
    application = create_app({"DATABASE_URL": db_settings["DATABASE_URL"],
                              "RATELIMIT_ENABLED": False})
    if backend == "postgresql":
        with database.connection_context():
            migrations.upgrade()
    yield application
    if not database.is_closed():
        database.close()
    if backend == "postgresql":
        database.close_all()  # the pool's sessions end now, not when it is collected


@pytest.fixture
def client(app):
    """A test client whose every response is validated against the OpenAPI document."""
    app.test_client_class = ContractClient
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def _key_for(app, owner):
    with app.app_context():
        return create_key(owner, label="test")[1]


@pytest.fixture
def api_key(app):
    """A key of OWNER."""
    return _key_for(app, OWNER)


@pytest.fixture
def other_key(app):
    """A key of OTHER_OWNER."""
    return _key_for(app, OTHER_OWNER)


@pytest.fixture
def api(client, api_key):
    """Call the API as OWNER: api.post(path, json=...), api.get(path)..."""
    return Caller(client, api_key)


@pytest.fixture
def other_api(client, other_key):
    return Caller(client, other_key)


class Caller:
    """The test client with an x-api-key header on every request."""

    def __init__(self, client, key):
        self.client, self.key = client, key

    def _call(self, call, path, **kwargs):
        headers = {"x-api-key": self.key, **kwargs.pop("headers", {})}
        return getattr(self.client, call)(path, headers=headers, **kwargs)

    def get(self, path, **kwargs):
        return self._call("get", path, **kwargs)

    def post(self, path, **kwargs):
        return self._call("post", path, **kwargs)

    def patch(self, path, **kwargs):
        return self._call("patch", path, **kwargs)

    def put(self, path, **kwargs):
        return self._call("put", path, **kwargs)

    def delete(self, path, **kwargs):
        return self._call("delete", path, **kwargs)

    def options(self, path, **kwargs):
        return self._call("options", path, **kwargs)

    def open(self, path, method, **kwargs):
        """Any method, FOO included."""
        return self._call("open", path, method=method, **kwargs)

    def save(self, body):
        return self.post("/api/v2/integrations/save", json=body)
