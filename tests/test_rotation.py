"""Encryption key rotation end to end (SPEC sections 7-8): new key in front, rotate, drop the old."""
import threading

import pytest
from cryptography.fernet import Fernet, InvalidToken

from potpie_flask import create_app, integrations
from potpie_flask.config import ConfigError
from potpie_flask.crypto import KEY_FILE_NAME, Vault
from potpie_flask.models import Integration

from .conftest import OWNER
from .faults import SAVE, wait_until
from .helpers import create, own_connection
from .servers import Gunicorn, flask_cli, server_env


@pytest.mark.slow
def test_rotate_then_drop_the_old_key(app, api_key, instance_path, db_settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    env = lambda keys: server_env(instance_path, db_settings, POTPIE_ENCRYPTION_KEYS=keys)  # noqa: E731
    expected = {}
    with Gunicorn(env(old), workers=2) as server:
        for n in range(6):
            auth = {"access_token": f"at-{n}", "refresh_token": f"rt-{n}"} if n % 2 else {"code": f"c-{n}"}
            status, answer, _ = server.request("POST", SAVE, key=api_key, body={
                "name": f"Rotated {n}", "integration_type": "confluence", "auth_data": auth})
            assert status == 200
            expected[answer["data"]["integration_id"]] = auth

    assert "re-encrypted 6 credential(s)" in flask_cli(env(f"{new},{old}"), "crypto", "rotate")
    assert "re-encrypted 0 credential(s)" in flask_cli(env(f"{new},{old}"), "crypto", "rotate")

    with Gunicorn(env(new), workers=2) as server:  # the old key is gone
        for iid in expected:
            status, answer, _ = server.request("GET", f"/api/v2/integrations/{iid}", key=api_key)
            assert status == 200 and answer["data"]["has_auth_data"] is (
                "access_token" in expected[iid])
        iid = next(iter(expected))
        status, _, _ = server.request("PATCH", f"/api/v2/integrations/{iid}", key=api_key,
                                      body={"auth_data": {"access_token": "at-new"}})
        assert status == 200  # comparing with the stored secrets needs them decrypted
        expected[iid] = {"access_token": "at-new"}

    vault, old_only = Vault([new]), Fernet(old.encode())
    with app.app_context():
        for iid, auth in expected.items():
            row = integrations.get(OWNER, iid)
            assert vault.open(row.credentials) == auth
            with pytest.raises(InvalidToken):
                old_only.decrypt(row.credentials.encode())


def test_rotate_stops_at_a_credential_no_key_opens_and_changes_nothing(app, api, runner):
    old_key, stranger_key = Fernet.generate_key(), Fernet.generate_key()
    stored = {}
    with app.app_context():
        for name, key in (("Old", old_key), ("Stranger", stranger_key)):
            iid = create(api, name=name, integration_type="jira",
                         auth_data={"access_token": "t"})["integration_id"]
            stored[iid] = Fernet(key).encrypt(b'{"access_token": "t"}').decode()
            Integration.update(credentials=stored[iid]).where(Integration.id == iid).execute()
    app.extensions["potpie_vault"] = Vault([Fernet.generate_key(), old_key])
    result = runner.invoke(args=["crypto", "rotate"])
    assert result.exit_code == 1
    assert result.output == (
        f"Error: the credentials of integration {list(stored)[1]} decrypt with none of the "
        "configured keys: keep the key they were stored with in POTPIE_ENCRYPTION_KEYS (after "
        "the new first key) until rotate has run; nothing was re-encrypted\n")
    with app.app_context():
        assert {row.id: row.credentials for row in Integration.select()} == stored


@pytest.mark.parametrize("backend", ["postgresql"])  # SQLite's rotate holds every writer off
def test_rotate_keeps_credentials_a_request_stored_while_it_ran(app, api, runner, backend):
    old_key, new_key = Fernet.generate_key(), Fernet.generate_key()
    with app.app_context():
        iid = create(api, name="Raced", integration_type="jira",
                     auth_data={"access_token": "t"})["integration_id"]
        Integration.update(credentials=Fernet(old_key).encrypt(b'{"access_token":"old"}').decode()
                           ).where(Integration.id == iid).execute()
    vault = app.extensions["potpie_vault"] = Vault([new_key, old_key])
    # A worker not restarted yet stores new credentials under the old key, its lock held
    # until rotate has read the row and waits to write it.
    request, _ = own_connection(app)
    cursor = request.cursor()
    cursor.execute("UPDATE integration SET credentials = %s WHERE id = %s",
                   (Fernet(old_key).encrypt(b'{"access_token":"new"}').decode(), iid))
    done = []
    rotate = threading.Thread(target=lambda: done.append(runner.invoke(args=["crypto", "rotate"])),
                              daemon=True)
    rotate.start()
    watcher, _ = own_connection(app)
    watcher.autocommit = True

    def rotate_waits_for_the_row():
        with watcher.cursor() as watching:
            watching.execute("SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
                             "AND wait_event_type = 'Lock' AND query LIKE 'UPDATE%%'")
            return watching.fetchone()
    try:
        wait_until(rotate_waits_for_the_row, 10, "rotate to wait for the row's lock")
    finally:
        request.commit()
        request.close()
        watcher.close()
    rotate.join(10)
    assert done, "rotate still running 10 s after the request committed"
    assert (done[0].exit_code, done[0].output) == (0, "re-encrypted 1 credential(s)\n")
    with app.app_context():
        stored = Integration.get_by_id(iid).credentials
    assert vault.open(stored) == {"access_token": "new"}
    assert vault.uses_first_key(stored)


FERNET_ERROR = ("Fernet key must be 32 url-safe base64-encoded bytes. (a key from "
                "Fernet.generate_key(); several are separated by commas)")


def test_a_key_that_is_not_a_fernet_key_stops_the_start(instance_path):
    good = Fernet.generate_key().decode()
    with pytest.raises(ConfigError) as refused:
        create_app({"RATELIMIT_ENABLED": False, "ENCRYPTION_KEYS": f"{good},notakey"})
    assert str(refused.value) == f"POTPIE_ENCRYPTION_KEYS: {FERNET_ERROR}"
    (instance_path / KEY_FILE_NAME).write_text("notakey\n")
    with pytest.raises(ConfigError) as refused:
        create_app({"RATELIMIT_ENABLED": False})
    assert str(refused.value) == f"{instance_path / KEY_FILE_NAME}: {FERNET_ERROR}"
