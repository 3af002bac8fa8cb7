"""Database selection from DATABASE_URL, and one connection per request."""
import os
from urllib.parse import urlsplit

import peewee
from playhouse import db_url
from playhouse.pool import MaxConnectionsExceeded

from .postgresql import PooledPostgresql
from .sqlite import QueuedWritersSqlite

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


def open_database(url, config):
    """The Peewee database of a URL that config.check passed: SQLite (WAL) or pooled PostgreSQL."""
    if is_postgresql(url):
        return PooledPostgresql(**{
            "connect_timeout": config["DATABASE_CONNECT_TIMEOUT"],
            # The URL's own libpq settings win (?connect_timeout=3 gave a TypeError, the
            # keyword passed twice).
            **db_url.parse("postgresql://" + url.split("://", 1)[1]),
            "max_connections": config["DATABASE_MAX_CONNECTIONS"],
            "stale_timeout": config["DATABASE_STALE_TIMEOUT"],
            "timeout": config["DATABASE_POOL_TIMEOUT"],
            "prepared_statements": config["DATABASE_PREPARED_STATEMENTS"],
            "lock_timeout_ms": config["DATABASE_LOCK_TIMEOUT_MS"],
        })
    busy_ms = config["SQLITE_BUSY_TIMEOUT_MS"]
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


def atomic():
    """`atomic()` of the configured database: a transaction, or a savepoint inside one."""
    # Not the proxy's: its _atomic would reach the database through the proxy at every step
    # (begin, commit, the transaction stack), one forwarded lookup each: 5% of a PATCH's
    # instructions (callgrind).
    return database.obj.atomic()


def supports_writing_ctes():
    """True when a WITH clause may hold an UPDATE that the INSERT after it reads (PostgreSQL)."""
    return isinstance(database.obj, peewee.PostgresqlDatabase)


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
