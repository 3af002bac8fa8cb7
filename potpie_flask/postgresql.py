"""Pooled PostgreSQL: no round trip to check a connection out, few round trips per transaction."""
import itertools
import logging
import re
import threading

import peewee
import psycopg2.errors
import psycopg2.extensions
from playhouse.pool import PooledPostgresqlDatabase
from psycopg2.extensions import TRANSACTION_STATUS_UNKNOWN

log = logging.getLogger("potpie_flask")

# What Peewee sends to open, release and roll back to a savepoint.
_SAVEPOINTS = ("SAVEPOINT", "RELEASE", "ROLLBACK")
# psycopg2's placeholders, and its escaped percent sign.
_PLACEHOLDER = re.compile(r"%[s%]")
# libpq takes tcp_user_timeout as a C int of milliseconds; Linux refuses a keepalive idle
# time past 32767 seconds (setsockopt TCP_KEEPIDLE), failing the connection.
_LONGEST_TCP_USER_TIMEOUT_MS = 2**31 - 1
_LONGEST_KEEPALIVE_IDLE = 32767


def _keepalives(seconds):
    """libpq's TCP settings that give up on a server gone silent after about `seconds`.

    The kernel's defaults probe an idle connection only after two hours: a request whose
    server vanished (a network cut, a host gone, no reset) waited until gunicorn killed its
    worker, and answered nothing. tcp_user_timeout (libpq 12 and later) also bounds data
    sent and never acknowledged.
    """
    settings = {"keepalives": 1, "keepalives_idle": min(seconds, _LONGEST_KEEPALIVE_IDLE),
                "keepalives_interval": 1, "keepalives_count": 3}
    if psycopg2.extensions.libpq_version() >= 120000:
        settings["tcp_user_timeout"] = min(seconds * 1000, _LONGEST_TCP_USER_TIMEOUT_MS)
    return settings


class _Connection(psycopg2.extensions.connection):
    """A psycopg2 connection that knows which statements it has prepared on its server session."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.prepared = set()


def _numbered(sql):
    """psycopg2's SQL with $1, $2... in place of %s, as PREPARE takes it; and how many."""
    count = itertools.count(1)
    text = _PLACEHOLDER.sub(lambda m: "%" if m.group() == "%%" else f"${next(count)}", sql)
    return text, next(count) - 1


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

    Inside a transaction, round trips are saved too: BEGIN is sent with the
    transaction's first statement, and writes queued with `write_later` (whose
    results nobody reads) are sent with the next statement or with COMMIT, in one
    message. psycopg2 binds parameters on the client, so the message is exactly the
    statements it would have sent one by one; PostgreSQL stops at the first that
    fails, and that error is raised by the call that sent it (COMMIT, typically),
    after which the transaction is rolled back as usual. From a savepoint on, a
    transaction's writes are sent one by one again: a write failing inside a
    savepoint must fail there, not with the ROLLBACK TO SAVEPOINT after it.

    Statements built once (`statements.py`) are also parsed once per connection:
    `prepare(sql)` names them, and each connection sends `PREPARE` the first time it
    runs one, then only `EXECUTE name(values)`, which spares the server parsing the
    same small statement on every request, and planning it too once PostgreSQL settles
    on a generic plan (as psycopg 3 and asyncpg prepare by default). Prepared statements
    live in a server session, so behind PgBouncer in transaction mode they must be
    switched off (`prepared_statements=False`).
    """

    def __init__(self, database, prepared_statements=True, lock_timeout_ms=0, **kwargs):
        kwargs.setdefault("connection_factory", _Connection)
        if kwargs.get("connect_timeout"):
            # As a connect is given up: a URL's own settings (its query) stay.
            for name, value in _keepalives(int(kwargs["connect_timeout"])).items():
                kwargs.setdefault(name, value)
        super().__init__(database, **kwargs)
        self._prepared_statements = prepared_statements
        self._lock_timeout_ms = lock_timeout_ms
        # "EXECUTE name(...)" -> (name, "PREPARE name AS ...", whether it only reads)
        self._prepares = {}
        # Threads may build statements at once: each must get a name of its own.
        self._names = itertools.count(1)
        self._naming = threading.Lock()

    def prepare(self, sql):
        """The SQL to run in place of `sql`: EXECUTE of a statement each connection prepares once."""
        if not self._prepared_statements:
            return sql
        text, count = _numbered(sql)
        with self._naming:
            name = f"potpie_{next(self._names)}"
            execute = (f"EXECUTE {name}({', '.join(['%s'] * count)})" if count
                       else f"EXECUTE {name}")
            self._prepares[execute] = (name, f"PREPARE {name} AS {text}", _is_select(sql))
        return execute

    def _execute_cursor(self, sql, params, **cursor_options):
        self._ensure_prepared(sql)
        return super()._execute_cursor(sql, params, **cursor_options)

    def _ensure_prepared(self, sql):
        prepare = self._prepares.get(sql)
        if prepare is None:
            return
        name, statement, _ = prepare
        conn = self.connection()
        if name not in conn.prepared:
            with peewee.__exception_wrapper__:
                conn.cursor().execute(statement)
            conn.prepared.add(name)

    def _is_closed(self, conn):
        return bool(conn.closed) or conn.get_transaction_status() == TRANSACTION_STATUS_UNKNOWN

    def _connect(self):
        self._state.unsent = None
        with self._pool_lock:
            # The connections themselves: a new one may take the id of one the pool dropped.
            idle = [conn for _, _, conn in self._connections]
            conn = super()._connect()
        # Only a connection that waited in the pool can have died unnoticed.
        self._state.untested = any(conn is waiting for waiting in idle)
        if not self._state.untested:
            try:
                self._start_session(conn)
            except BaseException:
                # The pool counts it in use: without this its slot and socket stay taken.
                self._close(conn, close_conn=True)
                raise
        return conn

    def _start_session(self, conn):
        """Give a new connection's session what the service's writes rely on, in one round trip.

        - READ COMMITTED, whatever the database's default: under REPEATABLE READ, concurrent
          saves of one identifier failed with serialization errors (503s) instead of all
          finding the one row.
        - The service's lock_timeout, and as long an idle_in_transaction_session_timeout: a
          transaction whose client went silent before its COMMIT (a network cut) held its
          row's lock until the server's keepalives noticed, two hours by default; every
          writer of that row gave up after the lock timeout meanwhile.

        A timeout the deployment set anywhere (the server's configuration, the role, the
        database, PGOPTIONS, the URL's options), 0 included, stays: only PostgreSQL's built-in
        default is replaced. A SET rather than a startup option, which would replace
        PGOPTIONS whole (and which PgBouncer refuses).
        """
        sql = "SELECT set_config('default_transaction_isolation', 'read committed', false)"
        params = []
        if self._lock_timeout_ms:
            sql += (", (SELECT count(set_config(name, %s, false)) FROM pg_settings "
                    "WHERE name IN ('lock_timeout', 'idle_in_transaction_session_timeout') "
                    "AND source = 'default')")
            params.append(f"{self._lock_timeout_ms}ms")
        with conn.cursor() as cursor:
            cursor.execute(sql, params)

    def _close(self, conn, close_conn=False):
        self._state.unsent = None
        super()._close(conn, close_conn)

    def execute_sql(self, sql, params=None):
        if getattr(self._state, "unsent", None):
            # Bound (and prepared, a round trip of its own) before the queue is taken:
            # if that fails, the queued BEGIN and writes are still there to roll back.
            bound = self._bound(sql, params)
        unsent = self._take_unsent()
        if unsent is not None and not sql.lstrip()[:9].upper().startswith(_SAVEPOINTS):
            self._state.unsent = []  # later writes of this transaction queue again
        if unsent:
            return self._send(unsent + [bound])
        run = super().execute_sql
        if self._first_use() and self._reads_only(sql):
            return self._again_if_died_idle(lambda: run(sql, params))
        return run(sql, params)

    def _reads_only(self, sql):
        prepare = self._prepares.get(sql)
        return prepare[2] if prepare else _is_select(sql)

    def begin(self, isolation_level=None):
        run = super().begin
        if self._first_use():
            return self._again_if_died_idle(lambda: run(isolation_level))
        if isolation_level or self._isolation_level:
            return run(isolation_level)
        self._state.unsent = [b"BEGIN"]

    def write_later(self, sql, params=None):
        """Run a write whose result nobody reads: in a transaction, with the next message sent."""
        unsent = getattr(self._state, "unsent", None)
        if unsent is None or not self.in_transaction():
            self.execute_sql(sql, params)
        else:
            unsent.append(self._bound(sql, params))

    def commit(self):
        unsent = self._take_unsent()
        if unsent:
            self._send(unsent + [b"COMMIT"])
        else:
            super().commit()

    def rollback(self):
        unsent = self._take_unsent()
        if unsent and unsent[0] == b"BEGIN":
            return  # nothing of this transaction reached the server
        super().rollback()

    def _take_unsent(self):
        unsent = getattr(self._state, "unsent", None)
        self._state.unsent = None
        return unsent

    def _bound(self, sql, params):
        self._ensure_prepared(sql)
        # As peewee passes them: an empty tuple still turns %% into %.
        return self.cursor().mogrify(sql, params or ())

    def _send(self, statements):
        with peewee.__exception_wrapper__:
            cursor = self.cursor()
            cursor.execute(b"; ".join(statements))
        return cursor

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


def _is_select(sql):
    return sql.lstrip()[:6].upper() == "SELECT"


def rolled_back_by_the_server(exc):
    """True when a Peewee error is PostgreSQL rolling the transaction back to end a conflict.

    A deadlock (two renames crossing each other's names in the unique index) or a
    serialization failure: nothing of the transaction stands, and it may run again.
    """
    return isinstance(getattr(exc, "orig", None), psycopg2.errors.TransactionRollbackError)


def refused_writes(exc):
    """True when a Peewee error is the server refusing writes: a standby, as after a failover."""
    return isinstance(getattr(exc, "orig", None), psycopg2.errors.ReadOnlySqlTransaction)
