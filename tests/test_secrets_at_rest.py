"""Credentials are encrypted at rest and never returned (SPEC sections 5 and 7)."""
import glob
import multiprocessing
import os
import stat
import subprocess
import sys

import pytest
from cryptography.fernet import Fernet

from potpie_flask import create_app, crypto
from potpie_flask.auth import create_key
from potpie_flask.db import database
from potpie_flask.models import Integration

from .servers import ROOT

TOKENS = {"access_token": "tok-DISTINCTIVE-4f1c9a7e-access",
          "refresh_token": "tok-DISTINCTIVE-4f1c9a7e-refresh",
          "code": "tok-DISTINCTIVE-4f1c9a7e-code"}


def _exercise_every_route(api):
    """Every route's answer, each a success: a refusal would hold no secret to leak."""
    answers = [api.save({"name": "Secret", "integration_type": "github",
                         "unique_identifier": "s", "auth_data": TOKENS})]
    iid = answers[0].get_json()["data"]["integration_id"]
    for path in ("/api/v2/integrations", f"/api/v2/integrations/{iid}",
                 f"/api/v2/integrations/{iid}/audit", f"/api/v2/integrations/{iid}/template"):
        answers.append(api.get(path))
    answers.append(api.patch(f"/api/v2/integrations/{iid}", json={"status": "error"}))
    assert [r.status_code for r in answers] == [200] * 6
    return [r.get_data(as_text=True) for r in answers]


def test_no_route_returns_a_secret(api):
    for body in _exercise_every_route(api):
        assert "DISTINCTIVE" not in body
        assert "access_token" not in body and "refresh_token" not in body


@pytest.mark.parametrize("backend", ["sqlite"])
def test_secrets_are_not_in_the_sqlite_file_or_its_wal(app, api, backend):
    _exercise_every_route(api)
    path = app.config["DATABASE_URL"].removeprefix("sqlite:///")
    files = [f for f in glob.glob(path + "*") if os.path.getsize(f)]
    assert {os.path.basename(f) for f in files} >= {"potpie.sqlite3", "potpie.sqlite3-wal"}
    for name in files:
        with open(name, "rb") as fh:
            data = fh.read()
        assert b"DISTINCTIVE" not in data, name
    with app.app_context():
        row = Integration.get()
        assert app.extensions["potpie_vault"].open(row.credentials) == TOKENS


@pytest.mark.parametrize("backend", ["postgresql"])
def test_secrets_are_not_in_the_postgresql_tables(app, api, backend):
    _exercise_every_route(api)
    with app.app_context():
        rows = database.execute_sql(
            "SELECT i::text FROM integration i UNION ALL SELECT a::text FROM audit_event a"
        ).fetchall()
        assert len(rows) == 3
        assert not any("DISTINCTIVE" in text for (text,) in rows)


def test_key_file_is_private_and_reused(tmp_path):
    keys = crypto.ensure_key_file(str(tmp_path))
    path = tmp_path / crypto.KEY_FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert crypto.ensure_key_file(str(tmp_path)) == keys
    assert [p.name for p in tmp_path.iterdir()] == [crypto.KEY_FILE_NAME]
    Fernet(keys[0])


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_instance_folder_and_the_database_files_are_their_owners_alone(tmp_path,
                                                                          monkeypatch, backend):
    instance = tmp_path / "fresh" / "instance"
    monkeypatch.setenv("POTPIE_INSTANCE_PATH", str(instance))
    for name in ("DATABASE_URL", "POTPIE_ENCRYPTION_KEYS"):
        monkeypatch.delenv(name, raising=False)
    app = create_app({"RATELIMIT_ENABLED": False})
    _, key = _key_of(app)
    r = app.test_client().post("/api/v2/integrations/save", headers={"x-api-key": key},
                               json={"name": "Private", "integration_type": "jira"})
    assert r.status_code == 200
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in instance.iterdir()}
    assert modes == {name: 0o600 for name in (
        crypto.KEY_FILE_NAME, "potpie.sqlite3", "potpie.sqlite3-wal", "potpie.sqlite3-shm",
        "potpie.sqlite3-writers.lock", "potpie.sqlite3-upgrade.lock")}
    assert stat.S_IMODE(instance.stat().st_mode) == 0o700


def _key_of(app):
    with app.app_context(), database.connection_context():
        return create_key("owner")


def _call_with_the_others(barrier, call, path, results):
    barrier.wait(30)
    results.put(call(path))


def raced(call, path, processes=8):
    """What `call(path)` returned in each of `processes` processes released together."""
    # Released together, the processes race for the file rather than find it made.
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(processes), context.Queue()
    starts = [context.Process(target=_call_with_the_others, args=(barrier, call, path, results))
              for _ in range(processes)]
    for start in starts:
        start.start()
    answers = [results.get(timeout=60) for _ in starts]
    for start in starts:
        start.join(30)
    return answers


def test_concurrent_starts_agree_on_one_key(tmp_path):
    keys = raced(crypto.ensure_key_file, str(tmp_path))
    assert all(k == keys[0] for k in keys) and len(keys[0]) == 1
    assert crypto.read_key_file(str(tmp_path)) == keys[0]


def test_of_concurrent_creations_one_alone_says_it_made_the_key(tmp_path):
    # What db upgrade's notice relies on: one "created" line, however many raced.
    assert sorted(raced(crypto.create_key_file, str(tmp_path))) == [False] * 7 + [True]
    assert len(crypto.read_key_file(str(tmp_path))) == 1


@pytest.mark.parametrize("backend", ["sqlite"])
def test_default_sqlite_setup_creates_its_key_file_on_first_start(app, backend, instance_path):
    assert (instance_path / crypto.KEY_FILE_NAME).exists()


def _without_a_key(pg_url, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("POTPIE_")}
    env.update(DATABASE_URL=pg_url, POTPIE_INSTANCE_PATH=str(tmp_path))
    return env


@pytest.mark.parametrize("start", [
    ["-c", "import wsgi"],
    ["-c", "import potpie_flask; potpie_flask.create_app()"],  # gunicorn 'potpie_flask:create_app()'
    ["-m", "flask", "--app", "potpie_flask", "run", "--port", "0"],
    # A click-based server (uvicorn, say) loading the app inside its own command.
    ["-c", "import click; click.command()(lambda: __import__('wsgi'))()"],
], ids=["wsgi", "factory", "flask-run", "click-server"])
def test_postgresql_without_a_key_refuses_to_serve(pg_url, tmp_path, start):
    done = subprocess.run([sys.executable, *start], cwd=ROOT, env=_without_a_key(pg_url, tmp_path),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "No encryption key: set POTPIE_ENCRYPTION_KEYS" in done.stderr
    assert not (tmp_path / crypto.KEY_FILE_NAME).exists()


def test_postgresql_db_upgrade_without_a_key_creates_the_key_file_and_says_so(pg_url, tmp_path):
    # SPEC section 7; said, because over several instances a key of one host's own is wrong.
    env = _without_a_key(pg_url, tmp_path)
    upgrade = [sys.executable, "-m", "flask", "--app", "potpie_flask", "db", "upgrade"]
    done = subprocess.run(upgrade, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    path = tmp_path / crypto.KEY_FILE_NAME
    assert (done.returncode, done.stderr) == (0, (
        f"created {path}, a key of this host's own: every instance over this database needs "
        "the same keys (this file, or POTPIE_ENCRYPTION_KEYS)\n"))
    assert done.stdout.startswith("schema at version ")
    key = crypto.read_key_file(str(tmp_path))
    Fernet(key[0])
    done = subprocess.run(upgrade, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (0, "")
    assert crypto.read_key_file(str(tmp_path)) == key


def test_postgresql_refusal_names_the_other_instances_keys_first(pg_url, tmp_path):
    done = subprocess.run([sys.executable, "-c", "import wsgi"], cwd=ROOT,
                          env=_without_a_key(pg_url, tmp_path), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0
    assert done.stderr.splitlines()[-1].endswith(
        "No encryption key: set POTPIE_ENCRYPTION_KEYS (comma-separated Fernet keys) to the "
        "keys every other instance over this database uses; for the first instance, "
        f"`flask --app potpie_flask db upgrade` creates {tmp_path / crypto.KEY_FILE_NAME}.")


def test_postgresql_reads_a_key_file_an_earlier_release_created(pg_url, tmp_path):
    key = crypto.ensure_key_file(str(tmp_path))[0]
    env = _without_a_key(pg_url, tmp_path)
    code = "import wsgi; print(wsgi.app.extensions['potpie_vault'].seal({}))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert crypto.Vault([key]).open(done.stdout.strip()) == {}


def test_crypto_rotate_reencrypts_under_the_first_key(app, api, runner, monkeypatch):
    api.save({"name": "Rot", "integration_type": "jira", "auth_data": TOKENS})
    old = app.extensions["potpie_vault"]
    new_key = Fernet.generate_key().decode()
    with app.app_context():
        old_token = Integration.get().credentials
    current = (app.config["ENCRYPTION_KEYS"] or
               ",".join(crypto.read_key_file(app.instance_path)))
    app.config["ENCRYPTION_KEYS"] = f"{new_key},{current}"
    app.extensions["potpie_vault"] = crypto.Vault(crypto.parse_keys(app.config["ENCRYPTION_KEYS"]))
    result = runner.invoke(args=["crypto", "rotate"])
    assert result.exit_code == 0
    assert result.output == "re-encrypted 1 credential(s)\n"
    with app.app_context():
        token = Integration.get().credentials
    assert token != old_token
    assert crypto.Vault([new_key]).open(token) == TOKENS
    assert runner.invoke(args=["crypto", "rotate"]).output == "re-encrypted 0 credential(s)\n"
    assert old.open(old_token) == TOKENS
