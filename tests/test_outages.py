"""Database outages: PostgreSQL cut behind a TCP proxy, and a SQLite writer holding the lock.

SPEC section 4: an unreachable or locked database answers 503 with Retry-After and
`Failed to save integration: Database unavailable`; section 6: /readyz 503,
/healthz 200 meanwhile. After the outage the next requests succeed, without a
restart and without an error from a connection that died in the pool.
"""
import fcntl
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid

import peewee
import psycopg2
import pytest
from playhouse import db_url

from potpie_flask import create_app
from potpie_flask.db import database
from potpie_flask.postgresql import PooledPostgresql

from .conftest import _empty_postgresql
from .faults import SAVE, pg_address, post_json, wait_until, workers
from .helpers import (holding_the_write_lock_of, one_session_waits_for, own_connection,
                      run_bounded)
from .proxy import TcpProxy
from .servers import ROOT, Gunicorn, server_env

UNAVAILABLE = {"success": False, "data": None,
               "error": "Failed to save integration: Database unavailable"}


@pytest.fixture(params=["postgresql"])
def backend(request):
    return request.param


@pytest.fixture
def proxy(request):
    url = request.getfixturevalue("pg_url")
    with TcpProxy(*pg_address(url)) as tcp:
        yield tcp


@pytest.fixture
def db_settings(backend, request, tmp_path):
    """PostgreSQL reached through the test's proxy; SQLite as usual."""
    if backend == "sqlite":
        return {"DATABASE_URL": "sqlite:///" + str(tmp_path / "instance" / "potpie.sqlite3")}
    proxy = request.getfixturevalue("proxy")
    _empty_postgresql(request.getfixturevalue("pg_url"))  # no rows of earlier tests
    return {"DATABASE_URL": proxy.url_for(request.getfixturevalue("pg_url")),
            "POTPIE_ENCRYPTION_KEYS": request.getfixturevalue("pg_encryption_key")}


def body(n):
    return {"name": f"Outage {n}", "integration_type": "jira", "unique_identifier": f"outage-{n}",
            "auth_data": {"access_token": f"token-{n}"}}


def assert_unavailable(status, answer, headers):
    assert status == 503
    assert answer == UNAVAILABLE
    assert headers["Retry-After"] == "5"  # RETRY_AFTER_SECONDS' default


def test_cut_answers_503_and_restore_needs_no_restart(api, client, proxy):
    assert api.save(body(1)).status_code == 200  # leaves a connection idle in the pool

    iid = api.get("/api/v2/integrations").get_json()["data"][0]["integration_id"]
    proxy.cut()
    r = api.save(body(2))
    assert_unavailable(r.status_code, r.get_json(), r.headers)
    # Every route's own verb (SPEC section 4).
    one = f"/api/v2/integrations/{iid}"
    for method, path, verb in (("get", "/api/v2/integrations", "list"), ("get", one, "read"),
                               ("get", one + "/audit", "read"), ("get", one + "/template", "read"),
                               ("patch", one, "update"), ("delete", one, "delete")):
        r = getattr(api, method)(path, **({"json": {"status": "error"}} if method == "patch" else {}))
        assert (r.status_code, r.get_json(), r.headers["Retry-After"]) == (503, {
            "success": False, "data": None,
            "error": f"Failed to {verb} integration: Database unavailable"}, "5"), (method, path)
    assert client.get("/readyz").status_code == 503
    assert client.get("/readyz").get_json() == {"status": "unavailable"}
    assert client.get("/healthz").get_json() == {"status": "ok"}

    proxy.restore()
    for n in range(3, 6):
        assert api.save(body(n)).status_code == 200
    assert client.get("/readyz").status_code == 200


def test_cli_with_the_database_cut_answers_one_error_line(app, api, proxy):
    runner = app.test_cli_runner()
    assert api.save(body(1)).status_code == 200
    proxy.cut()
    for args in (["keys", "list"], ["keys", "create", "--user-id", "u"], ["keys", "revoke", "1"],
                 ["crypto", "rotate"], ["db", "upgrade"]):
        result = runner.invoke(args=args)
        assert result.exit_code == 1, args
        assert result.output.startswith("Error: the database is unavailable: "), result.output
        assert len(result.output.splitlines()) == 1, result.output
    proxy.restore()
    assert runner.invoke(args=["keys", "list"]).exit_code == 0


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("settings,error", [
    ({"DATABASE_URL": "sqlite:///{tmp}/no such folder/potpie.sqlite3"},
     "the database is unavailable: unable to open database file"),
    ({"POTPIE_SQLITE_SYNCHRONOUS": "FUL"},
     "POTPIE_SQLITE_SYNCHRONOUS must be one of NORMAL, FULL, EXTRA, OFF, not 'FUL'"),
], ids=["unopenable-file", "bad-setting"])
def test_cli_that_cannot_load_the_app_answers_one_error_line(backend, tmp_path, settings, error):
    """Flask's CLI loads the app (SQLite's schema upgrade included) before any command runs."""
    env = server_env(tmp_path / "instance", {
        name: value.format(tmp=tmp_path) for name, value in settings.items()})
    for args in (["keys", "list"], ["db", "upgrade"]):
        done = subprocess.run([sys.executable, "-m", "flask", "--app", "potpie_flask", *args],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert (done.returncode, done.stdout, done.stderr) == (1, "", f"Error: {error}\n"), args


def test_connection_that_died_idle_in_the_pool_is_replaced_silently(api, client, proxy):
    """The outage happens while nobody asks: the first request afterwards must not fail."""
    assert api.save(body(1)).status_code == 200
    assert client.get("/readyz").status_code == 200
    proxy.cut()  # resets the pooled connection's socket
    proxy.restore()
    r = api.save(body(2))
    assert r.status_code == 200, r.get_json()
    proxy.cut()
    proxy.restore()
    assert client.get("/readyz").get_json() == {"status": "ready"}
    assert api.get(f"/api/v2/integrations/{r.get_json()['data']['integration_id']}").status_code == 200


@pytest.mark.slow
def test_outage_through_gunicorn(api_key, proxy, instance_path, db_settings, tmp_path):
    log_path = tmp_path / "gunicorn.log"
    env = server_env(instance_path, db_settings, POTPIE_DATABASE_CONNECT_TIMEOUT="2")
    with Gunicorn(env, workers=2, log_path=log_path) as server:
        pids = workers(server, 2)
        for n in range(6):
            assert post_json(server.url, SAVE, body(n), api_key)[0] == 200

        proxy.cut()
        for n in range(6, 12):
            started = time.monotonic()
            assert_unavailable(*post_json(server.url, SAVE, body(n), api_key))
            assert time.monotonic() - started < 3, "503 must come quickly"
        for _ in range(4):
            status, answer, _ = server.request("GET", "/readyz")
            assert (status, answer) == (503, {"status": "unavailable"})
            assert server.request("GET", "/healthz")[:2] == (200, {"status": "ok"})

        proxy.blackhole()  # connects are accepted and never answered
        started = time.monotonic()
        assert_unavailable(*post_json(server.url, SAVE, body(12), api_key))
        assert time.monotonic() - started < 2 * 2 + 3, "connect_timeout must bound the wait"

        proxy.restore()
        for n in range(13, 25):
            status, answer, _ = post_json(server.url, SAVE, body(n), api_key)
            assert status == 200, answer
        assert server.request("GET", "/readyz")[0] == 200
        assert workers(server, 2) == pids, "no worker may die in an outage"
    log = log_path.read_text()
    assert "WORKER TIMEOUT" not in log and "Traceback" not in log


def writers_lock_path(app):
    return app.config["DATABASE_URL"][len("sqlite:///"):] + "-writers.lock"


def fresh_body():
    """A save body with a name and identifier of its own."""
    tag = uuid.uuid4().hex[:12]
    return {"name": f"Outage {tag}", "integration_type": "jira", "unique_identifier": tag,
            "auth_data": {"access_token": f"token-{tag}"}}


def test_postgresql_writer_waiting_for_a_row_past_the_lock_timeout_gives_503(
        short_lock_timeout, app, api):
    saved = fresh_body()
    iid = api.save(saved).get_json()["data"]["integration_id"]
    with holding_the_write_lock_of(app, "postgresql", iid):
        started = time.monotonic()
        # Bounded: without a lock timeout the PATCH would wait for the holder for ever.
        r = run_bounded(lambda: api.patch(f"/api/v2/integrations/{iid}",
                                          json={"status": "error"}))
        assert (r.status_code, r.get_json()) == (503, {
            "success": False, "data": None,
            "error": "Failed to update integration: Database unavailable"})
        assert r.headers["Retry-After"] == "5"
        r = run_bounded(lambda: api.save({**saved, "status": "inactive"}))
        assert_unavailable(r.status_code, r.get_json(), r.headers)
        assert time.monotonic() - started < 5
        assert api.get(f"/api/v2/integrations/{iid}").get_json()["data"]["status"] == "active"
    r = api.patch(f"/api/v2/integrations/{iid}", json={"status": "error"})
    assert r.status_code == 200
    trail = api.get(f"/api/v2/integrations/{iid}/audit").get_json()["data"]
    assert [entry["action"] for entry in trail] == ["update", "create"]


def lock_timeout_of_a_new_connection(app):
    with app.app_context(), database.connection_context():
        return database.execute_sql("SHOW lock_timeout").fetchone()[0]


@pytest.mark.parametrize("query,configured,expected", [
    ("", 5000, "5s"),
    ("", 0, "0"),
    # A lock_timeout the deployment gave (here in the URL's options) is left as it is.
    ("?options=-c%20lock_timeout%3D1500", 5000, "1500ms"),
])
def test_each_new_connection_gets_the_lock_timeout_unless_it_has_one(
        db_settings, instance_path, monkeypatch, query, configured, expected):
    monkeypatch.setenv("POTPIE_ENCRYPTION_KEYS", db_settings["POTPIE_ENCRYPTION_KEYS"])
    app = create_app({"DATABASE_URL": db_settings["DATABASE_URL"] + query,
                      "RATELIMIT_ENABLED": False, "DATABASE_LOCK_TIMEOUT_MS": configured})
    assert lock_timeout_of_a_new_connection(app) == expected


def session_settings_of_a_new_connection(app, *names):
    with app.app_context(), database.connection_context():
        return [database.execute_sql(f"SHOW {name}").fetchone()[0] for name in names]


SESSION = ("default_transaction_isolation", "lock_timeout",
           "idle_in_transaction_session_timeout")


@pytest.mark.parametrize("options,configured,expected", [
    ("", 5000, ["read committed", "5s", "5s"]),
    ("", 0, ["read committed", "0", "0"]),
    # What the deployment gave stays, 0 included, but for the isolation the writes rely on.
    ("?options=-c%20default_transaction_isolation%3Drepeatable%5C%20read%20"
     "-c%20idle_in_transaction_session_timeout%3D60000", 5000, ["read committed", "5s", "1min"]),
    ("?options=-c%20lock_timeout%3D0%20-c%20idle_in_transaction_session_timeout%3D0", 5000,
     ["read committed", "0", "0"]),
])
def test_each_new_connection_gets_the_session_the_writes_rely_on(
        db_settings, instance_path, monkeypatch, options, configured, expected):
    monkeypatch.setenv("POTPIE_ENCRYPTION_KEYS", db_settings["POTPIE_ENCRYPTION_KEYS"])
    app = create_app({"DATABASE_URL": db_settings["DATABASE_URL"] + options,
                      "RATELIMIT_ENABLED": False, "DATABASE_LOCK_TIMEOUT_MS": configured})
    assert session_settings_of_a_new_connection(app, *SESSION) == expected


def test_concurrent_saves_of_one_identifier_under_repeatable_read_all_find_the_one_row(
        db_settings, instance_path, monkeypatch, api_key):
    # A database whose default isolation is REPEATABLE READ: its serialization errors
    # answered saves that changed the row while another did 503.
    monkeypatch.setenv("POTPIE_ENCRYPTION_KEYS", db_settings["POTPIE_ENCRYPTION_KEYS"])
    options = "?options=-c%20default_transaction_isolation%3Drepeatable%5C%20read"
    app = create_app({"DATABASE_URL": db_settings["DATABASE_URL"] + options,
                      "RATELIMIT_ENABLED": False})
    barrier = threading.Barrier(4)
    statuses, ids = [], set()

    def saves(n):
        client = app.test_client()
        barrier.wait(10)
        for turn in range(25):
            r = client.post(SAVE, json={"name": "Same", "integration_type": "jira",
                                        "unique_identifier": "same",
                                        "metadata": {"description": f"{n} {turn}"}},
                            headers={"x-api-key": api_key})
            statuses.append(r.status_code)
            ids.add(r.get_json()["data"] and r.get_json()["data"]["integration_id"])
    threads = [threading.Thread(target=saves, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert statuses == [200] * 100
    assert len(ids) == 1


def test_a_transaction_whose_client_went_silent_gives_its_row_lock_back(
        short_lock_timeout, app, api):
    # As a network cut before COMMIT would leave it: the session idle in its transaction.
    iid = api.save(fresh_body()).get_json()["data"]["integration_id"]
    watcher, _ = own_connection(app)
    watcher.autocommit = True

    def row_lock_is_free():
        with watcher.cursor() as cursor:
            try:
                cursor.execute("SELECT id FROM integration WHERE id = %s FOR UPDATE NOWAIT",
                               (iid,))
            except psycopg2.errors.LockNotAvailable:
                return False
            return True
    try:
        with app.app_context(), database.connection_context():
            database.begin()
            database.execute_sql("SELECT id FROM integration WHERE id = %s FOR UPDATE", (iid,))
            assert not row_lock_is_free()
            wait_until(row_lock_is_free, 10, "the server to end the idle transaction")
            with pytest.raises((peewee.OperationalError, peewee.InterfaceError)):
                database.execute_sql("SELECT 1")
    finally:
        watcher.close()
    r = api.patch(f"/api/v2/integrations/{iid}", json={"status": "error"})
    assert (r.status_code, r.get_json()["data"]["status"]) == (200, "error")


def test_a_connection_gives_up_on_a_silent_server_as_on_a_connect(
        db_settings, instance_path, monkeypatch):
    monkeypatch.setenv("POTPIE_ENCRYPTION_KEYS", db_settings["POTPIE_ENCRYPTION_KEYS"])
    for query, idle in (("", "7"), ("?keepalives_idle=60", "60")):
        app = create_app({"DATABASE_URL": db_settings["DATABASE_URL"] + query,
                          "RATELIMIT_ENABLED": False, "DATABASE_CONNECT_TIMEOUT": 7})
        with app.app_context(), database.connection_context():
            dsn = database.connection().get_dsn_parameters()
        assert (dsn["keepalives"], dsn["keepalives_idle"], dsn["keepalives_interval"],
                dsn["keepalives_count"], dsn["tcp_user_timeout"]) == ("1", idle, "1", "3", "7000")


def test_a_write_the_server_rolls_back_to_end_a_deadlock_is_run_again(app, api):
    # Two renames crossing each other's names deadlock in the name index; PostgreSQL rolls
    # one back after deadlock_timeout. That one is run again, not answered 503.
    a = api.save({"name": "X", "integration_type": "jira"}).get_json()["data"]
    b = api.save({"name": "Y", "integration_type": "jira"}).get_json()["data"]
    other, _ = own_connection(app)
    watcher, _ = own_connection(app)
    watcher.autocommit = True
    try:
        cursor = other.cursor()
        # The service's write is the one to detect the deadlock, and be rolled back.
        cursor.execute("SET LOCAL deadlock_timeout = '30s'")
        cursor.execute("SELECT pg_backend_pid()")
        others_pid = cursor.fetchone()[0]
        cursor.execute("UPDATE integration SET name = 'Z', name_key = 'z' WHERE id = %s",
                       (a["integration_id"],))
        answers = []
        renaming = threading.Thread(target=lambda: answers.append(api.patch(
            f"/api/v2/integrations/{b['integration_id']}", json={"name": "X"})))
        renaming.start()
        wait_until(lambda: one_session_waits_for(watcher, others_pid), 10,
                   "the rename to wait for the other transaction")
        cursor.execute("UPDATE integration SET status = 'error' WHERE id = %s",
                       (b["integration_id"],))
        other.commit()
        renaming.join(20)
    finally:
        other.close()
        watcher.close()
    r = answers[0]
    assert (r.status_code, r.get_json()["data"]["name"], r.get_json()["data"]["status"]) == (
        200, "X", "error")
    trail = api.get(f"/api/v2/integrations/{b['integration_id']}/audit").get_json()["data"]
    assert [e["action"] for e in trail] == ["update", "create"]
    assert trail[0]["changes"] == {"name": {"old": "Y", "new": "X"}}


def test_a_connect_timeout_beyond_what_tcp_takes_still_connects(
        db_settings, instance_path, monkeypatch):
    # As keepalive idle time, 40,000 s failed every connection (Linux takes 32,767 at most);
    # as tcp_user_timeout, 3,000,000 s overflows libpq's C int of milliseconds.
    monkeypatch.setenv("POTPIE_ENCRYPTION_KEYS", db_settings["POTPIE_ENCRYPTION_KEYS"])
    app = create_app({"DATABASE_URL": db_settings["DATABASE_URL"], "RATELIMIT_ENABLED": False,
                      "DATABASE_CONNECT_TIMEOUT": 3_000_000})
    with app.app_context(), database.connection_context():
        assert database.execute_sql("SELECT 1").fetchone() == (1,)
        dsn = database.connection().get_dsn_parameters()
    assert (dsn["keepalives_idle"], dsn["tcp_user_timeout"]) == ("32767", str(2**31 - 1))


def test_a_connect_timeout_in_the_url_wins(db_settings, instance_path, monkeypatch):
    # Given in the URL and by the setting, it was one keyword twice: a TypeError at start.
    monkeypatch.setenv("POTPIE_ENCRYPTION_KEYS", db_settings["POTPIE_ENCRYPTION_KEYS"])
    app = create_app({"DATABASE_URL": db_settings["DATABASE_URL"] + "?connect_timeout=3",
                      "RATELIMIT_ENABLED": False})
    with app.app_context(), database.connection_context():
        assert database.execute_sql("SELECT 1").fetchone() == (1,)
        dsn = database.connection().get_dsn_parameters()
    assert (dsn["connect_timeout"], dsn["keepalives_idle"]) == ("3", "3")


def test_a_server_that_refuses_writes_answers_503_and_reads_go_on(app, api):
    """A standby after a failover: its writes fail with ReadOnlySqlTransaction."""
    saved = fresh_body()
    iid = api.save(saved).get_json()["data"]["integration_id"]
    admin, _ = own_connection(app)
    admin.autocommit = True
    cursor = admin.cursor()
    cursor.execute("SELECT current_database()")
    name = cursor.fetchone()[0]

    def reconnect_the_app(read_only):
        cursor.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = '
                       f'{"on" if read_only else "off"}')
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))

        def others_gone():
            cursor.execute("SELECT count(*) = 0 FROM pg_stat_activity "
                           "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
            return cursor.fetchone()[0]
        wait_until(others_gone, 10, "the app's connections to end")
    try:
        reconnect_the_app(read_only=True)
        r = api.save(fresh_body())
        assert_unavailable(r.status_code, r.get_json(), r.headers)
        r = api.patch(f"/api/v2/integrations/{iid}", json={"status": "error"})
        assert (r.status_code, r.get_json()["error"]) == (
            503, "Failed to update integration: Database unavailable")
        assert api.get(f"/api/v2/integrations/{iid}").get_json()["data"]["status"] == "active"
    finally:
        reconnect_the_app(read_only=False)
        admin.close()
    assert api.save(fresh_body()).status_code == 200


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlite_writer_holding_the_lock_past_the_busy_timeout_gives_503(
        short_busy_timeout, app, api, client):
    assert app.config["SQLITE_BUSY_TIMEOUT_MS"] == 200
    assert api.save(body(1)).status_code == 200
    holder = sqlite3.connect(app.config["DATABASE_URL"][len("sqlite:///"):], timeout=0)
    try:
        holder.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        r = run_bounded(lambda: api.save(body(2)))
        assert_unavailable(r.status_code, r.get_json(), r.headers)
        assert time.monotonic() - started < 5
        assert api.get("/api/v2/integrations").status_code == 200  # readers go on (WAL)
    finally:
        holder.rollback()
        holder.close()
    assert api.save(body(2)).status_code == 200


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlite_writer_waiting_for_another_worker_past_the_busy_timeout_gives_503(
        short_busy_timeout, app, api):
    # Another worker's transaction holds the writers' lock file (its own open file).
    lock_path = writers_lock_path(app)
    assert api.save(body(1)).status_code == 200
    with open(lock_path, "ab") as other_worker:
        fcntl.flock(other_worker, fcntl.LOCK_EX)
        started = time.monotonic()
        r = api.save(body(2))
        assert_unavailable(r.status_code, r.get_json(), r.headers)
        assert time.monotonic() - started < 5
        assert api.get("/api/v2/integrations").get_json()["pagination"]["total"] == 1
    # The alarm that ended the wait is put away.
    assert signal.getsignal(signal.SIGALRM) == signal.SIG_DFL
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert api.save(body(2)).status_code == 200


def blocked_on(path):
    """True when /proc/locks shows a process blocked in the kernel on the flock of `path`."""
    inode = f":{os.stat(path).st_ino}"
    with open("/proc/locks") as fh:
        return any("->" in line and any(field.endswith(inode) for field in line.split())
                   for line in fh)


@pytest.mark.skipif(not os.path.exists("/proc/locks"), reason="reads /proc/locks (Linux only)")
@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlite_writer_in_the_main_thread_blocks_until_the_lock_is_released(app, api):
    # A poller sleeps on after the lock is released; a writer blocked in the kernel is woken.
    lock_path = writers_lock_path(app)
    assert api.save(body(1)).status_code == 200
    seen = []
    with open(lock_path, "ab") as other_worker:
        fcntl.flock(other_worker, fcntl.LOCK_EX)

        def release_once_waited_for():
            try:
                seen.append(wait_until(lambda: blocked_on(lock_path), 10, "a blocked writer"))
            finally:
                fcntl.flock(other_worker, fcntl.LOCK_UN)

        releaser = threading.Thread(target=release_once_waited_for)
        releaser.start()
        r = api.save(body(2))
        releaser.join(20)
    assert seen == [True]
    assert r.status_code == 200, r.get_json()
    assert signal.getsignal(signal.SIGALRM) == signal.SIG_DFL
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert api.get("/api/v2/integrations").get_json()["pagination"]["total"] == 2


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlite_writer_leaves_a_sigalrm_in_use_alone_and_polls(short_busy_timeout, app, api):
    rang = []
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: rang.append(signum))
    signal.setitimer(signal.ITIMER_REAL, 600)
    try:
        handler = signal.getsignal(signal.SIGALRM)
        with open(writers_lock_path(app), "ab") as other_worker:
            fcntl.flock(other_worker, fcntl.LOCK_EX)
            r = api.save(body(1))
        assert_unavailable(r.status_code, r.get_json(), r.headers)
        assert signal.getsignal(signal.SIGALRM) is handler
        assert 500 < signal.getitimer(signal.ITIMER_REAL)[0] <= 600
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert rang == []
    assert api.save(body(1)).status_code == 200


@pytest.fixture
def no_busy_timeout(monkeypatch):
    """SQLite writers never wait for the lock (ask for it before `app`)."""
    monkeypatch.setenv("POTPIE_SQLITE_BUSY_TIMEOUT_MS", "0")


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlite_writer_with_no_busy_timeout_answers_503_at_once(no_busy_timeout, app, api):
    assert app.config["SQLITE_BUSY_TIMEOUT_MS"] == 0
    done = threading.Event()
    with open(writers_lock_path(app), "ab") as other_worker:
        fcntl.flock(other_worker, fcntl.LOCK_EX)

        def release_should_it_block():
            # Bounds the test: a writer that blocked would take the lock now and answer 200.
            if not done.wait(10):
                fcntl.flock(other_worker, fcntl.LOCK_UN)

        releaser = threading.Thread(target=release_should_it_block)
        releaser.start()
        try:
            r = api.save(body(1))
        finally:
            done.set()
            releaser.join(20)
    assert_unavailable(r.status_code, r.get_json(), r.headers)


def test_a_connection_whose_session_setup_fails_gives_its_pool_slot_back(pg_url):
    name = f"potpie-setup-{uuid.uuid4().hex[:8]}"
    # A timeout PostgreSQL refuses (config.check bounds the setting): the SET fails on a
    # connection the pool has already counted as in use, as a server going away would.
    # options (which PGOPTIONS cannot add to) leave idle_in_transaction_session_timeout at
    # PostgreSQL's default, so that its SET runs.
    pool = PooledPostgresql(**db_url.parse(pg_url), max_connections=1, timeout=1,
                            lock_timeout_ms=2**40, application_name=name,
                            options="-c lock_timeout=0")
    for _ in range(2):  # the second finds the slot free, not "Exceeded maximum connections"
        with pytest.raises(peewee.DataError, match="idle_in_transaction_session_timeout"):
            pool.connect()
    watcher = psycopg2.connect(pg_url)
    watcher.autocommit = True

    def no_session_left():
        with watcher.cursor() as cursor:
            cursor.execute("SELECT count(*) = 0 FROM pg_stat_activity "
                           "WHERE application_name = %s", (name,))
            return cursor.fetchone()[0]
    try:
        wait_until(no_session_left, 10, "the failed connections' sessions to end")
    finally:
        watcher.close()
