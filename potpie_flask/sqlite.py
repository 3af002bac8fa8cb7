"""SQLite with writers queued by the kernel: the embedded default database."""
import fcntl
import os
import threading

import peewee


class QueuedWritersSqlite(peewee.SqliteDatabase):
    """SQLite whose writers wait in the kernel's queue for a lock file, not in SQLite's busy loop.

    A writer that finds SQLite locked sleeps and retries (1, 2, 5, 10... ms), so two
    gunicorn workers saving at once lose more time per collision than the transaction
    they wait for takes. Every transaction here first takes an exclusive flock on
    `<database>-writers.lock`; a waiter is woken the moment the holder commits, and a
    killed holder's lock is released by the kernel. SQLite's busy timeout still bounds
    the wait for anyone else holding SQLite's own lock (the sqlite3 shell, a backup).

    SQLite would checkpoint the WAL inside the COMMIT that crosses its threshold,
    with the lock file still held, stalling every writer for the checkpoint's fsyncs.
    Connections are opened with automatic checkpoints off instead, and every
    CHECKPOINT_EVERY commits a connection runs a PASSIVE checkpoint after releasing
    the lock file; a PASSIVE checkpoint blocks neither readers nor writers.
    """

    CHECKPOINT_EVERY = 200

    def __init__(self, database, pragmas=(), **kwargs):
        pragmas = [*dict(pragmas).items(), ("wal_autocheckpoint", 0)]
        super().__init__(database, pragmas=pragmas, **kwargs)
        self._lock_files = threading.local()

    def _lock_file(self):
        # One open file per thread and process, kept while the thread's connection is:
        # flock excludes open files, not processes, and a forked child must not share one.
        held = self._lock_files
        if getattr(held, "pid", None) != os.getpid():
            held.fd = os.open(self.database + "-writers.lock", os.O_RDWR | os.O_CREAT, 0o600)
            held.pid = os.getpid()
        return held.fd

    def _close(self, conn):
        super()._close(conn)
        held = self._lock_files
        if getattr(held, "pid", None) == os.getpid():
            os.close(held.fd)
            held.pid = None

    def begin(self, lock_type=None):
        fcntl.flock(self._lock_file(), fcntl.LOCK_EX)
        try:
            super().begin(lock_type)
        except BaseException:
            self._release()
            raise

    def commit(self):
        try:
            super().commit()
        finally:
            self._release()
        held = self._lock_files
        held.commits = getattr(held, "commits", 0) + 1
        if held.commits % self.CHECKPOINT_EVERY == 0:
            try:
                self.execute_sql("PRAGMA wal_checkpoint(PASSIVE)")
            except peewee.OperationalError:
                pass  # the commit stands; the next checkpoint copies what this one could not

    def rollback(self):
        try:
            super().rollback()
        finally:
            self._release()

    def _release(self):
        fcntl.flock(self._lock_file(), fcntl.LOCK_UN)
