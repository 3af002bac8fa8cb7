"""Rate limits (SPEC section 11): per key, failed authentication, headers, exemptions, Redis.

In-process tests use the memory store (or a Redis port nobody listens on); the Redis tests
run real gunicorn servers against POTPIE_TEST_REDIS_URL and skip without it. Every test
gets its own key prefix, so parallel runs never share counters.
"""
import concurrent.futures
import http.client
import json
import logging
import os
import shutil
import subprocess
import time
import uuid

import pytest

from potpie_flask import auth, create_app, ratelimit
from potpie_flask.config import ConfigError
from potpie_flask.auth import create_key, hash_key

from .faults import SAVE
from .helpers import LIST
from .servers import (Gunicorn, HeldRequest, flask_cli, free_port, server_env,
                      stop_with_the_test_run)

REDIS_URL_ENV = "POTPIE_TEST_REDIS_URL"
UNKNOWN_ID = "/api/v2/integrations/" + str(uuid.UUID(int=1, version=4))
LIMIT_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")
REFUSED = {"detail": "Rate limit exceeded"}
STRANGER = {"REMOTE_ADDR": "10.0.0.2"}


@pytest.fixture
def backend():
    """Limits do not depend on the database: these tests run on SQLite only."""
    return "sqlite"


@pytest.fixture
def prefix():
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make_app(db_settings, instance_path, prefix):
    """An app with rate limits on; keyword arguments override its configuration."""
    def make(**config):
        return create_app({"DATABASE_URL": db_settings["DATABASE_URL"],
                           "RATELIMIT_ENABLED": True, "RATELIMIT_KEY_PREFIX": prefix,
                           "RATELIMIT_STORAGE_URI": "memory://", **config})
    return make


def new_key(app, owner="user_abc123"):
    with app.app_context():
        return create_key(owner, label="test")[1]


def limit_headers(response):
    return {name: response.headers.get(name) for name in LIMIT_HEADERS}


def assert_refused(response):
    assert response.status_code == 429
    assert response.get_json() == REFUSED
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert response.headers["RateLimit-Remaining"] == "0"
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert response.headers["Retry-After"] == str(max(1, int(response.headers["RateLimit-Reset"])))


# --- per-key limit, memory store ---------------------------------------------------------


def test_key_limit_allows_n_then_answers_429_json_with_retry_after(make_app):
    app = make_app(RATELIMIT_DEFAULT="3 per minute")
    client, key = app.test_client(), new_key(app)
    for remaining in (2, 1, 0):
        r = client.get(LIST, headers={"x-api-key": key})
        assert r.status_code == 200
        assert r.headers["RateLimit-Limit"] == "3"
        assert r.headers["RateLimit-Remaining"] == str(remaining)
        assert 1 <= int(r.headers["RateLimit-Reset"]) <= 60
        assert "Retry-After" not in r.headers
    assert_refused(client.get(LIST, headers={"x-api-key": key}))
    assert_refused(client.post(SAVE, json={"name": "n", "integration_type": "jira"},
                               headers={"x-api-key": key}))


def test_key_budget_is_shared_by_every_route_and_separate_per_key(make_app):
    app = make_app(RATELIMIT_DEFAULT="4 per minute")
    client, key, other = app.test_client(), new_key(app), new_key(app, "user_other")
    mine = {"x-api-key": key}
    assert client.post(SAVE, json={"name": "A", "integration_type": "jira"},
                       headers=mine).status_code == 200
    assert client.get(LIST, headers=mine).status_code == 200
    assert client.get(UNKNOWN_ID, headers=mine).status_code == 404
    assert client.post(SAVE, json={}, headers=mine).status_code == 422
    assert_refused(client.get(UNKNOWN_ID + "/audit", headers=mine))
    r = client.get(LIST, headers={"x-api-key": other})
    assert r.status_code == 200 and r.headers["RateLimit-Remaining"] == "3"


@pytest.mark.parametrize("request_kwargs, status, limit", [
    ({"path": LIST, "with_key": True}, 200, "5"),
    ({"path": UNKNOWN_ID, "with_key": True}, 404, "5"),
    ({"path": SAVE, "method": "post", "json": {"name": ""}, "with_key": True}, 422, "5"),
    ({"path": SAVE, "method": "post", "data": "x", "with_key": True}, 415, "5"),
    ({"path": LIST}, 401, "7"),
    ({"path": LIST, "headers": {"x-api-key": "sk-wrong"}}, 401, "7"),
])
def test_every_limited_answer_carries_the_ratelimit_headers(make_app, request_kwargs, status,
                                                            limit):
    app = make_app(RATELIMIT_DEFAULT="5 per minute", RATELIMIT_AUTH_FAILURES="7 per minute")
    client, key = app.test_client(), new_key(app)
    kwargs = dict(request_kwargs)
    path, method = kwargs.pop("path"), kwargs.pop("method", "get")
    if kwargs.pop("with_key", False):
        kwargs["headers"] = {"x-api-key": key}
    r = getattr(client, method)(path, **kwargs)
    assert r.status_code == status
    headers = limit_headers(r)
    assert headers["RateLimit-Limit"] == limit
    # A 401 is itself one failure: the answer reports the budget after deducting it.
    assert headers["RateLimit-Remaining"] == str(int(limit) - 1)
    assert 1 <= int(headers["RateLimit-Reset"]) <= 60


def test_probes_unknown_routes_and_other_blueprints_are_never_limited(make_app):
    app = make_app(RATELIMIT_DEFAULT="1 per minute", RATELIMIT_AUTH_FAILURES="1 per minute")
    client = app.test_client()
    for _ in range(3):
        for path, status in (("/healthz", 200), ("/readyz", 200), ("/api/v2/docs", 200),
                             ("/api/v2/openapi.json", 200), ("/api/v2/nope", 404)):
            r = client.get(path, headers={"x-api-key": "sk-wrong"})
            assert r.status_code == status, path
            assert limit_headers(r) == dict.fromkeys(LIMIT_HEADERS), path


def test_disabled_turns_every_limit_off(make_app):
    app = make_app(RATELIMIT_ENABLED=False, RATELIMIT_DEFAULT="1 per minute",
                   RATELIMIT_AUTH_FAILURES="1 per minute")
    client, key = app.test_client(), new_key(app)
    for _ in range(3):
        ok = client.get(LIST, headers={"x-api-key": key})
        bad = client.get(LIST, headers={"x-api-key": "sk-wrong"})
        assert (ok.status_code, bad.status_code) == (200, 401)
        assert limit_headers(ok) == dict.fromkeys(LIMIT_HEADERS)
    assert "potpie_limiter" not in app.extensions


@pytest.mark.parametrize("name,value", [("RATELIMIT_AUTH_FAILURES", "30 per mins"),
                                        ("RATELIMIT_DEFAULT", "2 per minit")])
def test_a_limit_the_library_cannot_read_stops_the_start(make_app, name, value):
    # Flask-Limiter would log the parse error on each request and limit nothing.
    with pytest.raises(ConfigError) as refused:
        make_app(**{name: value})
    assert str(refused.value) == (f"POTPIE_{name}: no granularity matched for "
                                  f"{value.split()[-1]} in {value!r} (e.g. '600 per minute')")


def test_storage_keys_hold_neither_the_key_nor_its_stored_hash(make_app, prefix):
    app = make_app()
    client, key = app.test_client(), new_key(app)
    assert client.get(LIST, headers={"x-api-key": key}).status_code == 200
    stored = list(app.extensions["potpie_limiter"].storage.storage)
    assert stored and all(prefix in name for name in stored)
    assert not [name for name in stored if key in name or hash_key(key) in name]
    assert [name for name in stored if ratelimit.KEY_SCOPE in name]


# --- failed authentication, memory store --------------------------------------------------


@pytest.fixture
def lookups(monkeypatch):
    """Count key lookups (auth.owner_of) without changing their answers."""
    calls = []
    real = auth.owner_of

    def counting(key):
        calls.append(1)
        return real(key)
    monkeypatch.setattr(auth, "owner_of", counting)
    return calls


def test_failures_beyond_the_budget_answer_429_before_any_key_lookup(make_app, lookups):
    app = make_app(RATELIMIT_AUTH_FAILURES="3 per minute")
    client, key = app.test_client(), new_key(app)
    assert client.get(LIST).status_code == 401
    for _ in range(2):
        assert client.get(LIST, headers={"x-api-key": "sk-wrong"}).status_code == 401
    assert len(lookups) == 2
    for headers in ({"x-api-key": "sk-wrong"}, {}, {"x-api-key": key}):
        r = client.get(LIST, headers=headers)
        assert_refused(r)
        assert r.headers["RateLimit-Limit"] == "3"
    assert len(lookups) == 2
    # Another client, with a valid key or not, is not slowed by these failures.
    r = client.get(LIST, headers={"x-api-key": key}, environ_base=STRANGER)
    assert r.status_code == 200 and r.headers["RateLimit-Remaining"] == "599"
    r = client.get(LIST, headers={"x-api-key": "sk-wrong"}, environ_base=STRANGER)
    assert r.status_code == 401 and r.headers["RateLimit-Remaining"] == "2"


def test_only_answers_of_401_count_as_failures(make_app):
    app = make_app(RATELIMIT_AUTH_FAILURES="2 per minute")
    client, key = app.test_client(), new_key(app)
    mine = {"x-api-key": key}
    for _ in range(3):
        assert client.get(LIST, headers=mine).status_code == 200
        assert client.get(UNKNOWN_ID, headers=mine).status_code == 404
        assert client.post(SAVE, json={}, headers=mine).status_code == 422
    for remaining in ("1", "0"):
        r = client.get(LIST, headers={"x-api-key": "sk-wrong"})
        assert r.status_code == 401 and r.headers["RateLimit-Remaining"] == remaining
    assert_refused(client.get(LIST, headers=mine))


# --- fail open, in process ---------------------------------------------------------------


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append((record.levelname, record.getMessage()))


@pytest.fixture
def records():
    handler = Records()
    logger = logging.getLogger("potpie_flask")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def test_unreachable_redis_is_served_and_logged_once_per_minute(make_app, records,
                                                                 monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(ratelimit._Throttle, "clock", staticmethod(lambda: now[0]))
    app = make_app(RATELIMIT_STORAGE_URI=f"redis://127.0.0.1:{free_port()}/0",
                   RATELIMIT_DEFAULT="100 per minute")
    client, key = app.test_client(), new_key(app)

    def burst(count):
        started = time.monotonic()
        for _ in range(count):
            r = client.get(LIST, headers={"x-api-key": key})
            assert r.status_code == 200
            assert r.headers["RateLimit-Limit"] == "100"
        assert time.monotonic() - started < 0.2 * count

    def warnings():
        return [m for level, m in records.lines
                if level == "WARNING" and "storage unreachable" in m]

    burst(10)
    assert len(warnings()) == 1
    now[0] += 59
    burst(5)
    assert len(warnings()) == 1
    now[0] += 2
    burst(5)
    assert len(warnings()) == 2
    assert not [m for level, m in records.lines if level == "ERROR"]


# --- Redis: real gunicorn workers and instances ------------------------------------------


@pytest.fixture
def redis_url(prefix):
    url = os.environ.get(REDIS_URL_ENV)
    if not url:
        pytest.skip(f"{REDIS_URL_ENV} is not set: no Redis to test against")
    yield url
    _forget(url, prefix)


def _forget(url, prefix):
    """Delete this test's counters (they would expire on their own within a window)."""
    import redis
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        for name in list(client.scan_iter(f"LIMITS:LIMITER/{prefix}/*", count=500))[:10000]:
            client.delete(name)
    finally:
        client.close()


@pytest.fixture
def limited_env(instance_path, db_settings, prefix):
    """Environment of a server with rate limits on; extra settings as keyword arguments."""
    def env(**settings):
        return server_env(instance_path, db_settings, POTPIE_RATELIMIT_ENABLED="true",
                          POTPIE_RATELIMIT_KEY_PREFIX=prefix, **settings)
    return env


def server_key(env):
    return flask_cli(env, "keys", "create", "--user-id", "user_abc123").strip().splitlines()[-1]


def call(server, path, key=None, source="127.0.0.1"):
    """GET from a chosen loopback source address; returns (status, body, headers)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=15,
                                      source_address=(source, 0))
    try:
        conn.request("GET", path, headers={"x-api-key": key} if key else {})
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, (json.loads(raw) if raw else None), resp.headers
    finally:
        conn.close()


@pytest.mark.slow
def test_key_limit_is_exact_across_two_workers(limited_env, redis_url, tmp_path):
    env = limited_env(POTPIE_RATELIMIT_STORAGE_URI=redis_url,
                      POTPIE_RATELIMIT_DEFAULT="4 per minute")
    key = server_key(env)
    with Gunicorn(env, workers=2, log_path=tmp_path / "gunicorn.log") as server:
        held = HeldRequest(server, LIST, key)  # occupies one worker
        for remaining in (3, 2, 1):  # answered by the other worker
            status, _, headers = call(server, LIST, key)
            assert (status, headers["RateLimit-Remaining"]) == (200, str(remaining))
        # The first worker counts on from the other's hits: per-worker counters would say 3.
        status, headers, _ = held.finish()
        assert (status, headers["RateLimit-Remaining"]) == (200, "0")
        # Both workers now refuse, also under concurrency.
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: call(server, LIST, key), range(8)))
        assert [(s, body) for s, body, _ in answers] == [(429, REFUSED)] * 8
        assert all(1 <= int(h["Retry-After"]) <= 60 for _, _, h in answers)


@pytest.mark.slow
def test_key_limit_is_exact_across_two_instances_sharing_redis(limited_env, redis_url,
                                                               tmp_path):
    env = limited_env(POTPIE_RATELIMIT_STORAGE_URI=redis_url,
                      POTPIE_RATELIMIT_DEFAULT="6 per minute")
    key = server_key(env)
    with Gunicorn(env, workers=1, log_path=tmp_path / "a.log") as one, \
            Gunicorn(env, workers=1, log_path=tmp_path / "b.log") as two:
        for remaining in range(5, -1, -1):
            status, _, headers = call(one if remaining % 2 else two, LIST, key)
            assert (status, headers["RateLimit-Remaining"]) == (200, str(remaining))
        for server in (one, two):
            status, body, headers = call(server, LIST, key)
            assert (status, body) == (429, REFUSED)
            assert 1 <= int(headers["Retry-After"]) <= 60


@pytest.mark.slow
def test_failed_auth_is_counted_across_workers_per_client_address(limited_env, redis_url,
                                                                   tmp_path):
    env = limited_env(POTPIE_RATELIMIT_STORAGE_URI=redis_url,
                      POTPIE_RATELIMIT_AUTH_FAILURES="4 per minute")
    key = server_key(env)
    with Gunicorn(env, workers=2, log_path=tmp_path / "gunicorn.log") as server:
        for remaining in range(3, -1, -1):
            status, body, headers = call(server, LIST, "sk-wrong")
            assert (status, body) == (401, {"detail": "Invalid API key"})
            assert headers["RateLimit-Remaining"] == str(remaining)
        for sent in ("sk-wrong", None, key):
            status, body, headers = call(server, LIST, sent)
            assert (status, body, headers["RateLimit-Limit"]) == (429, REFUSED, "4")
        status, _, headers = call(server, LIST, key, source="127.0.0.2")
        assert (status, headers["RateLimit-Remaining"]) == (200, "599")


def test_window_resets(make_app, redis_url):
    app = make_app(RATELIMIT_STORAGE_URI=redis_url, RATELIMIT_DEFAULT="3 per 2 second")
    client, key = app.test_client(), new_key(app)
    mine = {"x-api-key": key}
    for _ in range(3):
        assert client.get(LIST, headers=mine).status_code == 200
    refused = client.get(LIST, headers=mine)
    assert_refused(refused)
    assert 0 <= int(refused.headers["RateLimit-Reset"]) <= 2
    # The next window starts at most 2 s on: polled, each refused try counted in the old one.
    deadline = time.monotonic() + 5
    while True:
        r = client.get(LIST, headers=mine)
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert r.status_code == 200
    assert r.headers["RateLimit-Remaining"] == "2"


@pytest.fixture
def throwaway_redis(tmp_path):
    """A redis-server of this test alone on a free port; never the machine's own."""
    binary = shutil.which("redis-server")
    if not binary:
        pytest.skip("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=stop_with_the_test_run)
    import redis
    client = redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("throwaway redis-server did not start")
            time.sleep(0.05)
    client.close()
    yield proc, f"redis://127.0.0.1:{port}/0"
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


@pytest.mark.slow
def test_requests_are_served_when_redis_stops_mid_run(limited_env, throwaway_redis, tmp_path):
    proc, url = throwaway_redis
    env = limited_env(POTPIE_RATELIMIT_STORAGE_URI=url,
                      POTPIE_RATELIMIT_DEFAULT="100 per minute")
    key = server_key(env)
    log_path = tmp_path / "gunicorn.log"
    with Gunicorn(env, workers=2, log_path=log_path) as server:
        for remaining in (99, 98, 97):
            status, _, headers = call(server, LIST, key)
            assert (status, headers["RateLimit-Remaining"]) == (200, str(remaining))
        proc.kill()
        proc.wait(10)
        for _ in range(20):
            started = time.monotonic()
            status, _, headers = call(server, LIST, key)
            assert status == 200 and headers["RateLimit-Limit"] == "100"
            assert time.monotonic() - started < 2
    lines = [json.loads(line) for line in log_path.read_text().splitlines()
             if line.startswith("{")]
    warnings = [line for line in lines if "storage unreachable" in line.get("message", "")]
    assert 1 <= len(warnings) <= 2  # once per worker that served a request, not per request
    assert key not in log_path.read_text()


def test_the_defaults_refuse_a_31st_failed_authentication_a_minute(instance_path, monkeypatch):
    """SPEC section 11's defaults, with no RATELIMIT_* setting: on, and 30 failures a minute."""
    for name in [name for name in os.environ if name.startswith("POTPIE_RATELIMIT_")]:
        monkeypatch.delenv(name)
    client = create_app().test_client()
    for remaining in range(29, -1, -1):
        r = client.get(LIST, headers={"x-api-key": "sk-wrong"})
        assert (r.status_code, r.headers["RateLimit-Limit"],
                r.headers["RateLimit-Remaining"]) == (401, "30", str(remaining))
    r = client.get(LIST, headers={"x-api-key": "sk-wrong"})
    assert (r.status_code, r.get_json(), r.headers["RateLimit-Limit"]) == (429, REFUSED, "30")


@pytest.mark.parametrize("uri", ["redis://h:6379/0", "Redis://h:6379/0", "REDISS://h:6379/0",
                                 "redis+sentinel://h:26379/m"])
def test_a_redis_storage_in_any_case_gets_the_storage_timeout(uri):
    options = ratelimit.storage_options(uri, 0.25)
    assert (options["socket_connect_timeout"], options["socket_timeout"]) == (0.25, 0.25)
    assert ratelimit.storage_options("memory://", 0.25) == {}
