"""Several instances: two gunicorn servers on different ports over one PostgreSQL."""
import threading

import pytest

from potpie_flask.models import ApiKey, AuditEvent, Integration

from .faults import SAVE, post_json
from .servers import Gunicorn, HeldRequest, flask_cli, server_env

pytestmark = pytest.mark.slow


@pytest.fixture(params=["postgresql"])
def backend(request):
    return request.param


@pytest.fixture
def two_instances(app, instance_path, db_settings, tmp_path):
    """Two servers sharing the database and the encryption key, each its own instance folder."""
    servers = []
    try:
        for name in ("a", "b"):
            folder = tmp_path / f"instance-{name}"
            folder.mkdir()
            servers.append(Gunicorn(server_env(folder, db_settings), workers=2))
        yield servers
    finally:
        for server in servers:
            server.stop()


def test_concurrent_saves_of_one_identifier_across_instances_leave_one_row(
        app, api_key, two_instances):
    answers, lock = [], threading.Lock()
    body = {"name": "Shared", "integration_type": "linear", "unique_identifier": "shared-1",
            "auth_data": {"access_token": "lin_api_1"}}

    def save(server, n):
        for _ in range(n):
            result = post_json(server.url, SAVE, body, api_key)
            with lock:
                answers.append(result)

    threads = [threading.Thread(target=save, args=(server, 5))
               for server in two_instances for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(answers) == 30
    assert {status for status, _, _ in answers} == {200}
    assert len({answer["data"]["integration_id"] for _, answer, _ in answers}) == 1
    with app.app_context():
        assert Integration.select().count() == 1
        assert [e.action for e in AuditEvent.select()] == ["create"]


def test_saved_through_one_is_read_through_the_other(api_key, two_instances):
    a, b = two_instances
    status, answer, _ = post_json(a.url, SAVE, {"name": "Via A", "integration_type": "jira",
                                                "auth_data": {"access_token": "t"}}, api_key)
    assert status == 200
    iid = answer["data"]["integration_id"]
    status, read, _ = b.request("GET", f"/api/v2/integrations/{iid}", key=api_key)
    assert status == 200 and read["data"] == answer["data"]
    assert b.request("PATCH", f"/api/v2/integrations/{iid}", body={"status": "inactive"},
                     key=api_key)[0] == 200
    assert a.request("GET", f"/api/v2/integrations/{iid}", key=api_key)[1]["data"]["status"] == \
        "inactive"


def test_key_revoked_through_the_cli_is_refused_by_both(
        app, api_key, instance_path, db_settings, two_instances):
    def answers_of_both_workers(server):
        # One worker waits for the held request's last line: the other answers meanwhile.
        held = HeldRequest(server, "/api/v2/integrations", api_key)
        status, answer, _ = server.request("GET", "/api/v2/integrations", key=api_key)
        held_status, _, held_answer = held.finish()
        return [(status, answer), (held_status, held_answer)]

    for server in two_instances:
        first, second = answers_of_both_workers(server)
        assert first == second and first[0] == 200 and first[1]["success"] is True
    with app.app_context():
        key_id = ApiKey.get().id
    flask_cli(server_env(instance_path, db_settings), "keys", "revoke", str(key_id))
    for server in two_instances:
        assert answers_of_both_workers(server) == [(401, {"detail": "Invalid API key"})] * 2
