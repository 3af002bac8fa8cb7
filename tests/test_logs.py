"""Logs (SPEC section 10): one JSON line per request, request ids, and nothing secret."""
import json
import logging
import re

import pytest

from potpie_flask import create_app
from potpie_flask.config import ConfigError
from potpie_flask.logs import log

from .faults import SAVE
from .servers import Gunicorn, server_env

REQUEST_KEYS = {"ts", "level", "request_id", "method", "path", "status", "duration_ms", "user_id"}


@pytest.mark.parametrize("sent", ["abc-123", "A.b_c-9", "x" * 128])
def test_sane_request_id_is_honoured(client, sent):
    r = client.get("/healthz", headers={"X-Request-ID": sent})
    assert r.headers["X-Request-ID"] == sent


@pytest.mark.parametrize("sent", ["", "x" * 129, "a b", "a\tb", "ä", "a/b", "<script>", "a;b",
                                  "sk-" + "0123456789abcdef" * 4,
                                  "req.sk-" + "0123456789abcdef" * 4 + "-1",
                                  "0123456789ABCDEF" * 4])
def test_insane_request_id_is_replaced(client, sent):
    r = client.get("/healthz", headers={"X-Request-ID": sent})
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["X-Request-ID"])


def test_every_response_carries_a_request_id(client, api):
    responses = [client.get("/healthz"), client.get("/readyz"), client.get("/nope"),
                 client.get("/api/v2/integrations"), api.get("/api/v2/integrations"),
                 api.post(SAVE, data=b"{", content_type="application/json"),
                 api.post(SAVE, data=b"x" * (64 * 1024 + 1), content_type="application/json"),
                 api.get("/api/v2/integrations/missing"), client.delete(SAVE)]
    ids = [r.headers.get("X-Request-ID") for r in responses]
    assert all(ids) and len(set(ids)) == len(ids)


@pytest.mark.slow
def test_a_run_with_credentials_and_a_bad_key_logs_no_secret(
        api_key, instance_path, db_settings, tmp_path):
    log_path = tmp_path / "gunicorn.log"
    token, refresh, code = "ghp_" + "T0k3n" * 8, "rt_" + "R3fr3sh" * 6, "oauth-code-" + "C0d3" * 6
    bad_key = "sk-" + "0123456789abcdef" * 4
    marker = "body-marker-" + "M4rk" * 5
    sent = []
    with Gunicorn(server_env(instance_path, db_settings), workers=2, log_path=log_path) as server:
        def call(method, path, **kwargs):
            rid = f"req-{len(sent)}"
            status, answer, headers = server.request(
                method, path, headers={"X-Request-ID": rid}, **kwargs)
            assert headers["X-Request-ID"] == rid
            # A key pasted into a URL is logged redacted.
            logged_path = path.split("?")[0].replace(api_key, "[redacted]").replace(
                api_key[3:], "[redacted]")
            sent.append((rid, method, logged_path, status))
            return status, answer

        body = {"name": "Logged", "integration_type": "github",
                "auth_data": {"access_token": token, "refresh_token": refresh, "code": code},
                "metadata": {"description": marker}}
        status, answer = call("POST", SAVE, body=body, key=api_key)
        assert status == 200
        iid = answer["data"]["integration_id"]
        assert call("PATCH", f"/api/v2/integrations/{iid}", key=api_key,
                    body={"auth_data": {"access_token": token + "2"}})[0] == 200
        assert call("GET", f"/api/v2/integrations/{iid}/audit", key=api_key)[0] == 200
        assert call("POST", SAVE, body=body, key=bad_key)[0] == 401
        assert call("POST", SAVE, body=body, key=api_key[:-1] + "Z")[0] == 401
        assert call("POST", SAVE, body={**body, "name": 1}, key=api_key)[0] == 422
        assert call("GET", "/healthz")[0] == 200
        assert call("GET", f"/api/v2/integrations/{api_key}", key=api_key)[0] == 404
        assert call("GET", f"/api/v2/integrations/{api_key[3:]}/audit", key=api_key)[0] == 404
    log = log_path.read_text()

    for secret in (token, refresh, code, bad_key, api_key, marker):
        for start in range(0, len(secret) - 8, 4):  # no 8-character piece of it either
            assert secret[start:start + 8] not in log, f"a piece of a secret was logged: {start}"
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    requests = [line for line in lines if "method" in line]
    assert all(set(line) == REQUEST_KEYS for line in requests)
    # The server's start-up probe (/healthz) aside, exactly the requests this test sent.
    requests = [line for line in requests if line["request_id"].startswith("req-")]
    assert [(r["request_id"], r["method"], r["path"], r["status"]) for r in requests] == sent
    for line in requests:
        assert set(line) == REQUEST_KEYS
        assert line["level"] == "info" and line["duration_ms"] >= 0
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", line["ts"])
    users = {r["request_id"]: r["user_id"] for r in requests}
    assert users["req-0"] == "user_abc123" and users["req-3"] is None and users["req-6"] is None


@pytest.mark.parametrize("given,level", [("debug", logging.DEBUG), (" Warning ", logging.WARNING),
                                         ("ERROR", logging.ERROR), (20, logging.INFO)])
def test_the_log_level_is_read_whatever_its_case(instance_path, given, level):
    try:
        create_app({"RATELIMIT_ENABLED": False, "LOG_LEVEL": given})
        assert log.level == level
    finally:
        log.setLevel(logging.INFO)


def test_a_log_level_logging_does_not_know_is_refused_at_start(instance_path):
    with pytest.raises(ConfigError) as refused:
        create_app({"RATELIMIT_ENABLED": False, "LOG_LEVEL": "verbose"})
    assert str(refused.value) == ("POTPIE_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, "
                                  "CRITICAL, not 'verbose'")
