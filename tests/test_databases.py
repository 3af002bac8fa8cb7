"""A run's PostgreSQL databases outlive it only until the next run: none of a live run's."""
import contextlib
import os
import subprocess
import sys
import uuid

import psycopg2
import pytest

from .conftest import PG_URL_ENV
from .databases import run_admin
from .faults import wait_until
from .servers import ROOT

pytestmark = pytest.mark.usefixtures("pg_url")  # skipped, with its reason, without PostgreSQL

# A run that dies as pytest-timeout ends one: os._exit, no teardown.
_DIES = """
import os, sys
from tests.databases import run_admin
admin, run = run_admin(sys.argv[1], sys.argv[2])
with admin.cursor() as cur:
    cur.execute(f'CREATE DATABASE "{run}"')
    cur.execute(f'CREATE DATABASE "{run}_1"')
print(run, flush=True)
os._exit(1)
"""


@pytest.fixture
def kind():
    """A kind of this test alone: another run's test of it must not see these databases."""
    kind = f"probe{uuid.uuid4().hex[:8]}"
    yield kind
    conn = psycopg2.connect(os.environ[PG_URL_ENV])
    conn.autocommit = True
    with conn.cursor() as cur:
        for name in _databases(cur, kind):
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


def _databases(cur, kind):
    cur.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s)",
                (f"potpie_{kind}_",))
    return sorted(name for (name,) in cur.fetchall())


def _connections_of(cur, run):
    cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (run,))
    return cur.fetchone()[0]


def test_a_new_run_drops_the_databases_of_a_run_gone_and_no_others(kind):
    url = os.environ[PG_URL_ENV]
    live, live_run = run_admin(url, kind)
    with contextlib.closing(live), live.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{live_run}"')
        cur.execute(f'CREATE DATABASE "{live_run}_1"')
        not_a_run = f"potpie_{kind}_by_hand"
        cur.execute(f'CREATE DATABASE "{not_a_run}"')
        died = subprocess.run([sys.executable, "-c", _DIES, url, kind], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
        assert died.returncode == 1, died.stderr
        dead_run = died.stdout.strip()
        assert _databases(cur, kind) == sorted(
            [live_run, f"{live_run}_1", not_a_run, dead_run, f"{dead_run}_1"])
        # Its server process ends once it reads the closed socket.
        wait_until(lambda: _connections_of(cur, dead_run) == 0, 10,
                   "the dead run's connection to close")

        later, _ = run_admin(url, kind)
        later.close()
        assert _databases(cur, kind) == sorted([live_run, f"{live_run}_1", not_a_run])
