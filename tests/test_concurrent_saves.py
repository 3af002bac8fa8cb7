"""Concurrent saves and changes through a real gunicorn with two workers (SPEC section 6)."""
from concurrent.futures import ThreadPoolExecutor

import pytest

from .faults import SAVE
from .servers import Gunicorn, flask_cli, server_env
CLIENTS = 20


@pytest.fixture
def server(db_settings, instance_path, tmp_path):
    """gunicorn (2 workers) over this backend's database, with a key of user_abc123."""
    env = server_env(instance_path, db_settings)
    flask_cli(env, "db", "upgrade")
    key = flask_cli(env, "keys", "create", "--user-id", "user_abc123").split()[-1]
    with Gunicorn(env, workers=2, log_path=tmp_path / "gunicorn.log") as gunicorn:
        gunicorn.key = key
        yield gunicorn


def _save_all(server, bodies):
    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        return list(pool.map(lambda body: server.request("POST", SAVE, body, server.key), bodies))


def test_concurrent_saves_of_one_identifier_leave_one_integration(server):
    body = {"name": "Race", "integration_type": "sentry", "unique_identifier": "race-1",
            "auth_data": {"access_token": "t"}}
    answers = _save_all(server, [body] * CLIENTS)
    assert [status for status, _, _ in answers] == [200] * CLIENTS
    ids = {payload["data"]["integration_id"] for _, payload, _ in answers}
    assert len(ids) == 1
    status, listing, _ = server.request("GET", "/api/v2/integrations", key=server.key)
    assert status == 200
    assert listing["pagination"]["total"] == 1
    assert listing["data"][0]["integration_id"] in ids
    iid = ids.pop()
    _, audit, _ = server.request("GET", f"/api/v2/integrations/{iid}/audit", key=server.key)
    assert [entry["action"] for entry in audit["data"]] == ["create"]


def test_concurrent_saves_of_one_new_name_give_one_200_and_409s(server):
    bodies = [{"name": "Same Name", "integration_type": "jira", "unique_identifier": f"n-{i}"}
              for i in range(CLIENTS)]
    answers = _save_all(server, bodies)
    statuses = sorted(status for status, _, _ in answers)
    assert statuses == [200] + [409] * (CLIENTS - 1)
    for status, payload, _ in answers:
        if status == 409:
            assert payload == {"success": False, "data": None,
                               "error": "Failed to save integration: "
                                        "Integration with this name already exists"}
    _, listing, _ = server.request("GET", "/api/v2/integrations", key=server.key)
    assert listing["pagination"]["total"] == 1


def test_concurrent_changes_of_one_row_each_see_the_one_before(server):
    body = {"name": "Shared", "integration_type": "linear"}
    _, saved, _ = server.request("POST", SAVE, body, server.key)
    path = f"/api/v2/integrations/{saved['data']['integration_id']}"
    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        answers = list(pool.map(
            lambda n: server.request("PATCH", path, {"metadata": {"description": f"d{n}"}},
                                     server.key),
            range(CLIENTS)))
    assert [status for status, _, _ in answers] == [200] * CLIENTS
    _, audit, _ = server.request("GET", f"{path}/audit?limit=100", key=server.key)
    updates = [entry for entry in reversed(audit["data"]) if entry["action"] == "update"]
    # No change was lost: each one's old metadata is the one before's new.
    assert len(updates) == CLIENTS
    descriptions = [entry["changes"]["metadata"]["new"]["description"] for entry in updates]
    assert sorted(descriptions) == sorted(f"d{n}" for n in range(CLIENTS))
    olds = [entry["changes"]["metadata"]["old"]["description"] for entry in updates]
    assert olds == [None] + descriptions[:-1]
    timestamps = [entry["timestamp"] for entry in updates]
    assert timestamps == sorted(set(timestamps))
    _, current, _ = server.request("GET", path, key=server.key)
    assert current["data"]["metadata"]["description"] == descriptions[-1]
    assert current["data"]["updated_at"] == timestamps[-1]
