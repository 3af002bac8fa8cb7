"""Versioned, idempotent schema upgrades (`flask db upgrade`)."""
import contextlib

from .db import database
from .models import ALL_MODELS, Integration, SchemaVersion


def _create_initial_tables():
    database.create_tables(ALL_MODELS, safe=True)


def _index_integrations_newest_first():
    """Replace the all-ascending (owner, created_at, id) index by one in the list's order."""
    database.execute_sql('DROP INDEX IF EXISTS "integration_owner_created_at_id"')
    Integration._schema.create_indexes(safe=True)


# Append new steps (e.g. playhouse.migrate operations); never edit an applied one.
MIGRATIONS = (_create_initial_tables, _index_integrations_newest_first)

# Any constant key works; it only serializes concurrent upgrades on one PostgreSQL.
_PG_LOCK_KEY = 0x706F747069


class SchemaTooNew(RuntimeError):
    """The database was upgraded by a newer release, whose schema this one does not know."""


def current_version():
    """The applied schema version, 0 for an empty database."""
    if not database.table_exists(SchemaVersion._meta.table_name):
        return 0
    row = SchemaVersion.select().order_by(SchemaVersion.version.desc()).first()
    return row.version if row else 0


def _known_version():
    """The applied version; SchemaTooNew when a newer release applied it."""
    version = current_version()
    if version > len(MIGRATIONS):
        # A rollback to an older release: it would serve a schema it does not know.
        raise SchemaTooNew(
            f"the database is at schema version {version}, newer than this release knows "
            f"({len(MIGRATIONS)}): run the release that upgraded it, or a later one")
    return version


def _one_upgrade_at_a_time():
    """SQLite's upgrades queue on a lock file; PostgreSQL's on an advisory lock, in upgrade()."""
    queue = getattr(database.obj, "one_upgrade_at_a_time", None)
    return queue() if queue else contextlib.nullcontext()


def upgrade():
    """Apply every pending migration in one transaction; returns (from_version, to_version)."""
    # Read first, with no write lock: every SQLite worker upgrades at start, and one that
    # waited for a request's write past the busy timeout failed to boot, which stops
    # gunicorn's master. Only an upgrade still to do waits, for as long as another takes.
    start = _known_version()
    if start == len(MIGRATIONS):
        return start, start
    with _one_upgrade_at_a_time(), database.atomic():
        if database.obj.for_update:
            # An upgrade waits for another upgrade, and for the requests holding its tables,
            # however long: the connection's lock_timeout is for requests.
            database.execute_sql("SET LOCAL lock_timeout = 0")
            database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (_PG_LOCK_KEY,))
        database.create_tables([SchemaVersion], safe=True)
        start = _known_version()  # another upgrade may have run meanwhile
        for step in MIGRATIONS[start:]:
            step()
        if start < len(MIGRATIONS):
            SchemaVersion.delete().execute()
            SchemaVersion.create(version=len(MIGRATIONS))
    return start, len(MIGRATIONS)
