"""The embedded SQLite database: writers queue on a lock file; the WAL is checkpointed, bounded."""
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading

import peewee
import pytest
from playhouse import db_url

from potpie_flask import sqlite
from potpie_flask.db import database
from potpie_flask.models import Integration
from potpie_flask.sqlite import QueuedWritersSqlite

from .faults import wait_until
from .helpers import assert_sqlite_write_locks_free, run_bounded
from .servers import ROOT

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

# A WAL frame's bytes: a 4 KiB page and its 24-byte header.
FRAME = 4096 + 24


def rows_in_the_file_itself(app, tmp_path):
    """Integrations in the database file alone, as if its WAL were lost."""
    main_file_only = tmp_path / "copy.sqlite3"
    shutil.copyfile(db_url.parse(app.config["DATABASE_URL"])["database"], main_file_only)
    try:
        with sqlite3.connect(main_file_only) as copy:
            return copy.execute("SELECT count(*) FROM integration").fetchone()[0]
    except sqlite3.DatabaseError:
        # Copied before any checkpoint (no table yet) or while one was writing pages.
        return 0


def saved(api, count, prefix="n"):
    """The statuses of `count` saves of new integrations, named `prefix` and a number."""
    return [api.save({"name": f"{prefix}{i}", "integration_type": "jira"}).status_code
            for i in range(count)]


def saved_until_a_checkpoint_is_asked(api, prefix):
    """Save until a commit wakes the checkpoint thread, and no more; returns how many saves.

    No write may follow: a checkpoint that runs beside a writer can copy part of the WAL,
    and the file alone is then not a database until a later checkpoint copies the rest.
    """
    count = 0
    while True:
        assert api.save({"name": f"{prefix}{count}", "integration_type": "jira"}).status_code == 200
        count += 1
        # Requests run on this thread: its commits, the schema's included, are these.
        if database.obj._lock_files.commits % QueuedWritersSqlite.CHECKPOINT_EVERY == 0:
            return count


def save_past_two_checkpoints(api, app, tmp_path):
    """Save until two checkpoints are due, then wait until the file itself holds the saves."""
    saves = saved_until_a_checkpoint_is_asked(api, "first ")
    saves += saved_until_a_checkpoint_is_asked(api, "second ")
    wait_until(lambda: rows_in_the_file_itself(app, tmp_path) == saves, 10,
               "the second checkpoint")


def test_saves_reach_the_database_file_itself_not_only_its_wal(api, app, tmp_path):
    saves = saved_until_a_checkpoint_is_asked(api, "n")
    # Without the checkpoint thread the file itself would hold none.
    wait_until(lambda: rows_in_the_file_itself(app, tmp_path) == saves, 10, "a checkpoint")


def test_a_save_never_waits_for_a_checkpoint(api, app, tmp_path, monkeypatch):
    running, finish = threading.Event(), threading.Event()
    checkpoint = QueuedWritersSqlite._checkpoint

    def slow_checkpoint(self):
        running.set()
        finish.wait(30)
        return checkpoint(self)

    monkeypatch.setattr(QueuedWritersSqlite, "_checkpoint", slow_checkpoint)
    saves = QueuedWritersSqlite.CHECKPOINT_EVERY + 10
    try:
        assert run_bounded(lambda: saved(api, saves), timeout=20) == [200] * saves
        assert running.wait(10)
    finally:
        finish.set()
    wait_until(lambda: rows_in_the_file_itself(app, tmp_path) == saves, 10,
               "the checkpoint to finish")


def blocks_sigalrm(thread):
    with open(f"/proc/self/task/{thread.native_id}/status") as fh:
        mask = int(re.search(r"SigBlk:\s+([0-9a-f]+)", fh.read()).group(1), 16)
    return bool(mask >> (signal.SIGALRM - 1) & 1)


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="reads /proc (Linux only)")
def test_the_checkpoint_thread_leaves_sigalrm_to_a_writer_waiting_for_the_lock(api):
    # The alarm that ends a writer's wait (sqlite._lock_within) must interrupt that wait.
    saved_until_a_checkpoint_is_asked(api, "n")
    checkpointers = [thread for thread in threading.enumerate()
                     if thread.name == "potpie-sqlite-checkpoints"]
    assert checkpointers
    wait_until(lambda: all(map(blocks_sigalrm, checkpointers)), 10, "SIGALRM blocked")
    assert not blocks_sigalrm(threading.main_thread())


def test_a_failed_checkpoint_is_logged_and_the_next_one_runs(api, app, tmp_path, monkeypatch):
    execute_sql = QueuedWritersSqlite.execute_sql
    failures, warnings = [], []

    def failing_once(self, sql, *args, **kwargs):
        if sql.startswith("PRAGMA wal_checkpoint") and not failures:
            failures.append(sql)
            raise peewee.OperationalError("disk I/O error")
        return execute_sql(self, sql, *args, **kwargs)

    monkeypatch.setattr(QueuedWritersSqlite, "execute_sql", failing_once)
    monkeypatch.setattr(sqlite.log, "warning", lambda msg, *args: warnings.append(msg % args))
    save_past_two_checkpoints(api, app, tmp_path)
    assert warnings == ["WAL checkpoint failed: disk I/O error"]


def test_the_checkpoint_thread_outlives_an_error_of_any_kind(api, app, tmp_path, monkeypatch):
    checkpoint_wal = QueuedWritersSqlite.checkpoint_wal
    failures, logged = [], []

    def failing_once(self):
        if not failures:
            failures.append(1)
            raise ValueError("not a database error")
        checkpoint_wal(self)

    monkeypatch.setattr(QueuedWritersSqlite, "checkpoint_wal", failing_once)
    monkeypatch.setattr(sqlite.log, "exception", logged.append)
    save_past_two_checkpoints(api, app, tmp_path)
    assert logged == ["WAL checkpoint failed"]


def test_a_save_whose_commit_could_not_start_the_checkpoint_thread_still_succeeds(
        api, app, tmp_path, monkeypatch):
    start = threading.Thread.start
    refused, warnings = [], []

    def refusing_once(thread):
        if thread.name == "potpie-sqlite-checkpoints" and not refused:
            refused.append(thread)
            raise RuntimeError("can't start new thread")
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", refusing_once)
    monkeypatch.setattr(sqlite.log, "warning", lambda msg, *args: warnings.append(msg % args))
    save_past_two_checkpoints(api, app, tmp_path)
    assert warnings == ["WAL checkpoint thread did not start: can't start new thread"]


@pytest.fixture
def recorded_syncs(monkeypatch):
    """Every os.fdatasync of this process, as (path, the database's restart due), then done."""
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("reads /proc/self/fd (Linux)")
    fdatasync, synced = os.fdatasync, []

    def recording(fd):
        synced.append((os.readlink(f"/proc/self/fd/{fd}"), database.obj._restart_due))
        fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", recording)
    return synced


def test_the_checkpoint_thread_syncs_the_database_file_before_the_wal_may_start_over(
        api, app, monkeypatch, recorded_syncs):
    # Three saves write about 20 WAL frames: past a threshold of 5, short of one of 10,000.
    assert saved(api, 3, "first ") == [200] * 3
    path = os.path.realpath(db_url.parse(app.config["DATABASE_URL"])["database"])
    sync = QueuedWritersSqlite._sync_database_file

    def off_the_lock(self):
        # Another writer could take both locks while the file is synced.
        assert_sqlite_write_locks_free(app)
        sync(self)

    monkeypatch.setattr(QueuedWritersSqlite, "_sync_database_file", off_the_lock)
    with app.app_context(), database.connection_context():
        monkeypatch.setattr(QueuedWritersSqlite, "LOCKED_CHECKPOINT_AFTER_FRAMES", 10000)
        database.obj.checkpoint_wal()
        assert recorded_syncs == [] and database.obj._restart_due is False
        monkeypatch.setattr(QueuedWritersSqlite, "LOCKED_CHECKPOINT_AFTER_FRAMES", 5)
        for round_ in range(2):
            assert saved(api, 3, f"more {round_} ") == [200] * 3
            database.obj.checkpoint_wal()
            assert recorded_syncs == [(path, False)] * (round_ + 1)
            assert database.obj._restart_due is True
            # Still open: closing it would have dropped SQLite's locks on the file.
            assert os.readlink(f"/proc/self/fd/{database.obj._sync_fd}") == path
            # The next commit runs the pass under the lock that the restart was due for.
            assert saved(api, 1, f"last {round_} ") == [200]
            assert database.obj._restart_due is False


def test_a_failed_sync_is_logged_and_the_wal_starts_over_all_the_same(
        api, app, monkeypatch, recorded_syncs):
    warnings = []
    monkeypatch.setattr(sqlite.log, "warning", lambda msg, *args: warnings.append(msg % args))
    monkeypatch.setattr(QueuedWritersSqlite, "LOCKED_CHECKPOINT_AFTER_FRAMES", 5)
    assert saved(api, 3, "first ") == [200] * 3
    with app.app_context(), database.connection_context():
        database.obj.database += ".gone"  # what the descriptor is opened on, and nothing else
        try:
            database.obj.checkpoint_wal()
        finally:
            database.obj.database = database.obj.database[:-len(".gone")]
        assert database.obj._restart_due is True
        assert recorded_syncs == []
        assert len(warnings) == 1 and warnings[0].startswith(
            "database file sync before the WAL starts over failed: [Errno 2]")
        assert saved(api, 1, "after ") == [200]
        assert database.obj._restart_due is False


@pytest.fixture
def synchronous_off(monkeypatch):
    """POTPIE_SQLITE_SYNCHRONOUS=OFF for the app (before `app`)."""
    monkeypatch.setenv("POTPIE_SQLITE_SYNCHRONOUS", "OFF")


def test_with_synchronous_off_the_checkpoint_thread_syncs_nothing(
        synchronous_off, api, app, monkeypatch, recorded_syncs):
    monkeypatch.setattr(QueuedWritersSqlite, "LOCKED_CHECKPOINT_AFTER_FRAMES", 0)
    assert saved(api, 1) == [200]
    with app.app_context(), database.connection_context():
        assert database.execute_sql("PRAGMA synchronous").fetchone() == (0,)
        database.obj.checkpoint_wal()
        assert database.obj._restart_due is True
    assert recorded_syncs == []


def test_sqlite_itself_never_checkpoints_on_commit(app):
    with app.app_context(), database.connection_context():
        assert database.execute_sql("PRAGMA wal_autocheckpoint").fetchone() == (0,)


@pytest.fixture
def small_wal_limit(monkeypatch):
    """A WAL limit of 40 frames, about four saves, checked after every commit (before `app`)."""
    monkeypatch.setattr(QueuedWritersSqlite, "LOCKED_CHECKPOINT_AFTER_FRAMES", 20)
    monkeypatch.setattr(QueuedWritersSqlite, "WAL_SIZE_EVERY", 1)


def test_a_reader_pinning_the_wal_past_its_limit_slows_saves_but_loses_none(
        short_busy_timeout, small_wal_limit, api, app, monkeypatch):
    warnings = []
    monkeypatch.setattr(sqlite.log, "warning", lambda msg, *args: warnings.append(msg % args))
    path = db_url.parse(app.config["DATABASE_URL"])["database"]
    limit = 2 * 20 * FRAME
    assert api.save({"name": "before the reader", "integration_type": "jira"}).status_code == 200
    reader = sqlite3.connect(path, isolation_level=None)
    try:
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM integration").fetchone() == (1,)
        statuses = []
        while os.path.getsize(path + "-wal") <= limit and len(statuses) < 50:
            statuses.append(api.save({"name": f"n{len(statuses)}",
                                      "integration_type": "jira"}).status_code)
        # The save that crossed the limit waited the busy timeout for the reader, then answered.
        assert statuses == [200] * len(statuses) and len(statuses) < 50
        assert warnings == [f"WAL past {limit} bytes: writers wait for a full checkpoint",
                            "WAL checkpoint failed: still in use after the busy timeout"]
    finally:
        reader.close()
    assert api.save({"name": "after the reader", "integration_type": "jira"}).status_code == 200
    assert len(warnings) == 3
    assert os.path.getsize(path + "-wal") == 0
    with sqlite3.connect(path) as check:
        assert check.execute("SELECT count(*) FROM integration").fetchone() == (
            len(statuses) + 2,)


_WRITER = """
import os, sys
from potpie_flask import create_app, integrations
from potpie_flask.db import database
from potpie_flask.sqlite import QueuedWritersSqlite
QueuedWritersSqlite.CHECKPOINT_EVERY = 20
QueuedWritersSqlite.LOCKED_CHECKPOINT_AFTER_FRAMES = 200
QueuedWritersSqlite.WAL_SIZE_EVERY = 1
app = create_app({"RATELIMIT_ENABLED": False})
vault = app.extensions["potpie_vault"]
longest = 0
with app.app_context(), database.connection_context():
    for i in range(int(sys.argv[2])):
        integrations.save("writer", {"name": f"{sys.argv[1]} {i}", "integration_type": "jira"}, vault)
        longest = max(longest, os.path.getsize(database.database + "-wal"))
print(longest)
"""


def test_the_wal_stays_bounded_while_writers_never_pause(app, instance_path):
    # Checkpoints run after the lock is released never catch up with writers that do not
    # pause, and SQLite starts a WAL over only once all of it is copied: unchecked, these
    # saves grew it to 28-48 MB in two runs (nearly every frame ever written).
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, f"writer {n}", "500"],
                                cwd=ROOT, stdout=subprocess.PIPE, text=True)
               for n in range(3)]
    try:
        printed = [w.communicate(timeout=60)[0] for w in writers]
    finally:
        for w in writers:
            w.kill()
    assert [w.returncode for w in writers] == [0, 0, 0]
    longest = [int(line) for line in printed]
    # Twice 200 frames, the hard limit, plus a save of each writer: each may commit one
    # before the first to find the WAL past the limit takes the lock file again (a frame per
    # page a save changes: at most 13 seen). Without the limit, 761-2,674 frames over 45
    # runs, and up to 6,126 beside a `dd` writing to the same disk.
    assert max(longest) <= (2 * 200 + 3 * 30) * FRAME
    with app.app_context(), database.connection_context():
        assert Integration.select().where(Integration.owner == "writer").count() == 1500


def test_a_lock_file_that_cannot_be_opened_makes_the_database_unavailable(api, app):
    lock_path = database.obj.database + "-writers.lock"
    os.rename(lock_path, lock_path + ".moved")
    os.mkdir(lock_path)  # opened for writing: EISDIR, as a file of another owner gives EACCES
    try:
        # A thread of its own: this one's lock file is open already.
        r = run_bounded(lambda: api.save({"name": "Locked out", "integration_type": "jira"}))
    finally:
        os.rmdir(lock_path)
        os.rename(lock_path + ".moved", lock_path)
    assert (r.status_code, r.get_json()["error"]) == (
        503, "Failed to save integration: Database unavailable")


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can create a file for another owner")
def test_a_lock_file_root_creates_belongs_to_the_database_files_owner(app, tmp_path):
    path = str(tmp_path / "owned.sqlite3")
    sqlite3.connect(path).close()
    os.chown(path, 65534, 65534)
    with sqlite._lock_file_of(path, "-upgrade.lock"):
        pass
    created = os.stat(path + "-upgrade.lock")
    assert (created.st_uid, created.st_gid, created.st_mode & 0o777) == (65534, 65534, 0o600)
