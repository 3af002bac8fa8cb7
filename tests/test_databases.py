"""The PostgreSQL database of a run that died before dropping it is dropped by a later run."""
import os
import subprocess
import sys

import psycopg2
import pytest

from .conftest import PG_URL_ENV
from .databases import _host, drop_abandoned, run_database_name

pytestmark = pytest.mark.usefixtures("pg_url")  # skipped, with its reason, without PostgreSQL


@pytest.fixture
def admin():
    conn = psycopg2.connect(os.environ[PG_URL_ENV])
    conn.autocommit = True
    with conn.cursor() as cur:
        yield cur
    conn.close()


def _databases(cur, prefix):
    cur.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (prefix,))
    return sorted(name for (name,) in cur.fetchall())


def test_only_databases_of_runs_whose_process_is_gone_are_dropped(admin):
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    prefix = f"potpie_probe_{_host()}_"
    abandoned = f"{prefix}{ended.stdout.strip()}_0123abcd"
    ours = run_database_name("probe")
    other_host = f"potpie_probe_00000000_{ended.stdout.strip()}_0123abcd"
    for name in (abandoned, ours, other_host):
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        assert drop_abandoned(admin, "probe") == [abandoned]
        assert _databases(admin, "potpie_probe_") == sorted([ours, other_host])
        assert drop_abandoned(admin, "probe") == []
    finally:
        for name in (abandoned, ours, other_host):
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
