"""Encryption key rotation end to end (SPEC sections 7-8): new key in front, rotate, drop the old."""
import pytest
from cryptography.fernet import Fernet, InvalidToken

from potpie_flask import integrations
from potpie_flask.crypto import Vault

from .conftest import OWNER
from .faults import SAVE
from .servers import Gunicorn, flask_cli, server_env

pytestmark = pytest.mark.slow


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
