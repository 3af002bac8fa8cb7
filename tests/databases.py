"""PostgreSQL databases of one run (a test session, a benchmark): dropped when it ends, and
by a later run when the run that made them died first (a pytest-timeout exit, a kill).

A run holds one connection open for as long as it lasts, named (`application_name`) after
the run; its databases are named after the run too. A database of that naming whose run has
no connection left belongs to no live run, whatever host or container it ran in: the
server itself says so, where process ids would mean something only on one host.
"""
import re
import uuid
import warnings

import psycopg2


def run_admin(url, kind):
    """An autocommit connection to `url` that marks a new run live, and the run's name.

    The run's databases are named the run's name, or that and `_<n>`; while the connection
    is open no other run drops them. The `kind` databases of runs gone are dropped first.
    """
    run = f"potpie_{kind}_{uuid.uuid4().hex}"
    if len(run) > 59:  # the server cuts names at 63 bytes; `_<n>` must still fit
        raise ValueError(f"kind {kind!r} is too long for a run's name")
    # Keepalives, and no idle_session_timeout: the connection idles all run long, and a run
    # whose connection the server closed would look gone to the next one.
    conn = psycopg2.connect(url, application_name=run, keepalives=1, keepalives_idle=30,
                            keepalives_interval=10, keepalives_count=3)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT set_config(name, '0', false) FROM pg_settings "
                        "WHERE name = 'idle_session_timeout'")
            _drop_abandoned(cur, kind)
    except BaseException:
        conn.close()
        raise
    return conn, run


def _drop_abandoned(cursor, kind):
    """Drop the `kind` databases whose run has no connection left."""
    prefix = f"potpie_{kind}_"
    cursor.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (prefix,))
    databases = [name for (name,) in cursor.fetchall()]
    cursor.execute("SELECT application_name FROM pg_stat_activity")
    live = {name for (name,) in cursor.fetchall()}
    for name in databases:
        run = re.fullmatch(rf"({re.escape(prefix)}[0-9a-f]{{32}})(?:_\d+)?", name)
        if run is None or run.group(1) in live:
            continue
        try:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except psycopg2.Error as exc:
            # Another role's, say: this run can go on without dropping it.
            warnings.warn(f"{name}, left by a run that ended, could not be dropped: {exc}")
