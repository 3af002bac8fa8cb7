"""Database selection from DATABASE_URL, and one connection per request."""
import fcntl
import logging
import os
import threading
from urllib.parse import urlsplit

import peewee
from psycopg2.extensions import TRANSACTION_STATUS_UNKNOWN
from playhouse import db_url
from playhouse.pool import MaxConnectionsExceeded, PooledPostgresqlDatabase

log = logging.getLogger("potpie_flask")

# Models bind to this proxy; create_app points it at the configured database.
database = peewee.DatabaseProxy()

# Errors that mean "the database cannot be reached or is locked", answered with 503.
UNAVAILABLE_ERRORS = (peewee.OperationalError, peewee.InterfaceError, MaxConnectionsExceeded)


def default_url(instance_path):
    """The embedded default: a SQLite file in the instance folder."""
    return "sqlite:///" + os.path.join(instance_path, "potpie.sqlite3")


def is_postgresql(url):
    """True when the URL names a PostgreSQL server."""
    return urlsplit(url).scheme.split("+")[0] in ("postgres", "postgresql")


class PooledPostgresql(PooledPostgresqlDatabase):
    """Pooled PostgreSQL whose checkout costs no round trip, yet survives connections that died idle.

    Peewee's pool pings every connection it hands out (SELECT 1): one extra round
    trip per request, paid to guard against something that happens only after a
    database restart or a network cut. Here a checkout trusts what psycopg2
    already knows (`conn.closed`), and the first statement sent on a connection
    taken from the pool is sent once more, on a new connection, when it fails
    because that connection turned out to be dead. Only statements that write
    nothing (BEGIN, SELECT) are repeated, so a statement that did reach the
    server before the connection broke can never be applied twice.
    """

    def _is_closed(self, conn):
        return bool(conn.closed) or conn.get_transaction_status() == TRANSACTION_STATUS_UNKNOWN

    def _connect(self):
        with self._pool_lock:
            idle = {id(conn) for _, _, conn in self._connections}
            conn = super()._connect()
        # Only a connection that waited in the pool can have died unnoticed.
        self._state.untested = id(conn) in idle
        return conn

    def execute_sql(self, sql, params=None):
        run = super().execute_sql
        if self._first_use() and sql.lstrip()[:6].upper() == "SELECT":
            return self._again_if_died_idle(lambda: run(sql, params))
        return run(sql, params)

    def begin(self, isolation_level=None):
        run = super().begin
        if self._first_use():
            return self._again_if_died_idle(lambda: run(isolation_level))
        return run(isolation_level)

    def _first_use(self):
        if self.is_closed() and self.autoconnect:
            # Check out now (peewee would do it inside the call) so the flag is this connection's.
            self.connect()
        untested = getattr(self._state, "untested", False)
        self._state.untested = False
        return untested

    def _again_if_died_idle(self, run):
        try:
            return run()
        except (peewee.OperationalError, peewee.InterfaceError):
            dead = self._state.conn
            if dead is None or not dead.closed:
                raise  # the server answered: a real error, not a lost connection
        log.warning("pooled database connection had died while idle; reconnecting")
        self._replace(dead)
        return run()

    def _replace(self, dead):
        """Swap the dead connection for a new one, keeping the open transaction state."""
        with self._pool_lock:
            self._in_use.pop(self.conn_key(dead), None)
            self._close_raw(dead)
            # The connections idle beside it talked to the same server: most likely dead too.
            self.close_idle()
        with peewee.__exception_wrapper__:
            conn = self._connect()
        self._state.conn = conn
        self._initialize_connection(conn)


class QueuedWritersSqlite(peewee.SqliteDatabase):
    """SQLite whose writers wait in the kernel's queue for a lock file, not in SQLite's busy loop.

    A writer that finds SQLite locked sleeps and retries (1, 2, 5, 10... ms), so two
    gunicorn workers saving at once lose more time per collision than the transaction
    they wait for takes. Every transaction here first takes an exclusive flock on
    `<database>-writers.lock`; a waiter is woken the moment the holder commits, and a
    killed holder's lock is released by the kernel. SQLite's busy timeout still bounds
    the wait for anyone else holding SQLite's own lock (the sqlite3 shell, a backup).
    """

    def __init__(self, database, **kwargs):
        super().__init__(database, **kwargs)
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

    def rollback(self):
        try:
            super().rollback()
        finally:
            self._release()

    def _release(self):
        fcntl.flock(self._lock_file(), fcntl.LOCK_UN)


def open_database(url, config):
    """Build the Peewee database for a URL: SQLite in WAL mode, or pooled PostgreSQL."""
    if is_postgresql(url):
        return PooledPostgresql(
            **db_url.parse("postgresql://" + url.split("://", 1)[1]),
            max_connections=int(config["DATABASE_MAX_CONNECTIONS"]),
            stale_timeout=int(config["DATABASE_STALE_TIMEOUT"]),
            timeout=float(config["DATABASE_POOL_TIMEOUT"]),
            connect_timeout=int(config["DATABASE_CONNECT_TIMEOUT"]),
        )
    if urlsplit(url).scheme != "sqlite":
        raise RuntimeError("DATABASE_URL must start with sqlite:// or postgresql://")
    busy_ms = int(config["SQLITE_BUSY_TIMEOUT_MS"])
    return QueuedWritersSqlite(
        db_url.parse(url)["database"],
        # BEGIN IMMEDIATE: a read-then-write transaction takes the write lock up front,
        # so two writers queue on the busy timeout instead of failing on lock upgrade.
        lock_type="IMMEDIATE",
        timeout=busy_ms / 1000,
        pragmas={
            "journal_mode": "wal",
            "busy_timeout": busy_ms,
            "foreign_keys": 1,
            "synchronous": config["SQLITE_SYNCHRONOUS"],
        },
    )


def supports_row_locks():
    """True when SELECT ... FOR UPDATE is available (PostgreSQL; SQLite locks the whole file)."""
    return bool(database.obj.for_update)


def init_app(app):
    """Bind the models to the configured database and give connections back after each request."""
    url = app.config["DATABASE_URL"]
    database.initialize(open_database(url, app.config))
    pooled = is_postgresql(url)

    @app.teardown_appcontext
    def release_connection(exc):
        if database.is_closed():
            return
        if not pooled:
            # SQLite keeps one connection per worker thread: closing the last one
            # checkpoints the WAL, which costs more than the request itself.
            if database.in_transaction():
                database.rollback()
            return
        if database.connection().closed:
            # psycopg2 marks a connection whose server went away; never pool it again.
            database.manual_close()
        else:
            database.close()
