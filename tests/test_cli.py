"""`db upgrade` and `flask shell` (SPEC sections 7 and 8)."""
import fcntl
import threading

import pytest

from potpie_flask import create_app, migrations
from potpie_flask.db import database
from potpie_flask.models import ALL_MODELS, ApiKey, AuditEvent, Integration, SchemaVersion

from .faults import wait_until
from .helpers import holding_the_write_lock_of, own_connection
from .servers import flask_cli, server_env


def test_db_upgrade_is_idempotent(runner, app):
    first = runner.invoke(args=["db", "upgrade"])
    second = runner.invoke(args=["db", "upgrade"])
    assert first.exit_code == second.exit_code == 0
    assert second.output == f"schema at version {len(migrations.MIGRATIONS)} (up to date)\n"
    with app.app_context():
        assert [row.version for row in SchemaVersion.select()] == [len(migrations.MIGRATIONS)]
        assert all(database.table_exists(m._meta.table_name) for m in ALL_MODELS)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_start_on_an_upgraded_database_takes_no_write_lock(app, short_busy_timeout):
    """Each SQLite worker upgrades at start: it must not wait for a writer holding the lock."""
    with holding_the_write_lock_of(app, "sqlite", integration_id=None):
        started = create_app({"DATABASE_URL": app.config["DATABASE_URL"],
                              "RATELIMIT_ENABLED": False})
    with started.app_context():
        assert migrations.current_version() == len(migrations.MIGRATIONS)


def test_a_database_upgraded_by_a_newer_release_is_refused(runner, app):
    current, newer = len(migrations.MIGRATIONS), len(migrations.MIGRATIONS) + 1
    with app.app_context(), database.connection_context():
        SchemaVersion.update(version=newer).execute()
    refusal = (f"the database is at schema version {newer}, newer than this release knows "
               f"({current}): run the release that upgraded it, or a later one")
    try:
        result = runner.invoke(args=["db", "upgrade"])
        assert (result.exit_code, result.output) == (1, f"Error: {refusal}\n")
        if app.config["DATABASE_URL"].startswith("sqlite"):  # the service upgrades at start
            with pytest.raises(migrations.SchemaTooNew, match="newer than this release knows"):
                create_app({"DATABASE_URL": app.config["DATABASE_URL"],
                            "RATELIMIT_ENABLED": False})
        with app.app_context(), database.connection_context():
            assert [row.version for row in SchemaVersion.select()] == [newer]
    finally:  # PostgreSQL's database serves the run's later tests
        with app.app_context(), database.connection_context():
            SchemaVersion.update(version=current).execute()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_db_upgrade_reports_the_upgrade_sqlite_did_as_the_command_loaded(backend, tmp_path):
    env = server_env(tmp_path / "instance", {})
    first, second = (flask_cli(env, "db", "upgrade") for _ in range(2))
    assert (first, second) == (f"schema at version {len(migrations.MIGRATIONS)} (was 0)\n",
                               f"schema at version {len(migrations.MIGRATIONS)} (up to date)\n")


def test_db_upgrade_creates_a_fresh_schema(runner, app):
    with app.app_context():
        database.drop_tables([*ALL_MODELS, SchemaVersion])
        assert migrations.current_version() == 0
    result = runner.invoke(args=["db", "upgrade"])
    assert result.exit_code == 0
    assert result.output == f"schema at version {len(migrations.MIGRATIONS)} (was 0)\n"


def test_db_upgrade_from_version_1_indexes_integrations_in_the_list_order(runner, app, api):
    api.save({"name": "Kept", "integration_type": "jira"})
    with app.app_context(), database.connection_context():
        # The version 1 schema: the list's index with every column ascending.
        database.execute_sql('DROP INDEX "integration_owner_newest_first"')
        database.execute_sql('CREATE INDEX "integration_owner_created_at_id" '
                             'ON "integration" ("owner", "created_at", "id")')
        SchemaVersion.update(version=1).execute()
    result = runner.invoke(args=["db", "upgrade"])
    assert result.output == f"schema at version {len(migrations.MIGRATIONS)} (was 1)\n"
    with app.app_context(), database.connection_context():
        indexes = {index.name for index in database.get_indexes("integration")}
    assert "integration_owner_newest_first" in indexes
    assert "integration_owner_created_at_id" not in indexes
    assert [row["name"] for row in api.get("/api/v2/integrations").get_json()["data"]] == ["Kept"]


@pytest.mark.parametrize("backend", ["postgresql"])
def test_db_upgrade_waits_for_another_upgrade_past_the_lock_timeout(short_lock_timeout, app,
                                                                   runner):
    assert app.config["DATABASE_LOCK_TIMEOUT_MS"] == 200
    with app.app_context(), database.connection_context():
        SchemaVersion.update(version=len(migrations.MIGRATIONS) - 1).execute()
    holder, _ = own_connection(app)
    holder.autocommit = True
    cursor = holder.cursor()
    cursor.execute("SELECT pg_advisory_lock(%s)", (migrations._PG_LOCK_KEY,))
    upgraded = []
    upgrade = threading.Thread(target=lambda: upgraded.append(
        runner.invoke(args=["db", "upgrade"])), daemon=True)
    upgrade.start()

    def waited_past_the_timeout():
        cursor.execute("SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
                       "AND wait_event_type = 'Lock' "
                       "AND now() - state_change > interval '400 milliseconds'")
        return cursor.fetchone()
    try:
        wait_until(waited_past_the_timeout, 10, "the upgrade to wait 400 ms for the lock")
    finally:
        cursor.execute("SELECT pg_advisory_unlock(%s)", (migrations._PG_LOCK_KEY,))
        holder.close()
    upgrade.join(10)
    assert upgraded[0].exit_code == 0, upgraded[0].output
    assert upgraded[0].output == (f"schema at version {len(migrations.MIGRATIONS)} "
                                  f"(was {len(migrations.MIGRATIONS) - 1})\n")


def _upgrading_in_a_thread(runner):
    upgraded = []
    upgrade = threading.Thread(target=lambda: upgraded.append(
        runner.invoke(args=["db", "upgrade"])), daemon=True)
    upgrade.start()
    return upgrade, upgraded


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlite_upgrade_waits_for_another_upgrade_past_the_busy_timeout(short_busy_timeout,
                                                                        app, runner):
    """A worker starting beside another's long upgrade must wait for it, not fail to boot."""
    assert app.config["SQLITE_BUSY_TIMEOUT_MS"] == 200
    latest = len(migrations.MIGRATIONS)
    with app.app_context(), database.connection_context():
        SchemaVersion.update(version=latest - 1).execute()
    with open(database.obj.database + "-upgrade.lock", "ab") as other_upgrade:
        fcntl.flock(other_upgrade, fcntl.LOCK_EX)
        upgrade, upgraded = _upgrading_in_a_thread(runner)
        upgrade.join(1.0)  # five busy timeouts
        still_waiting = upgrade.is_alive()
        fcntl.flock(other_upgrade, fcntl.LOCK_UN)
    upgrade.join(10)
    assert still_waiting
    assert (upgraded[0].exit_code, upgraded[0].output) == (
        0, f"schema at version {latest} (was {latest - 1})\n")


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlite_upgrade_gives_up_on_a_writer_after_the_busy_timeout(short_busy_timeout, app,
                                                                    runner):
    """What holds the writers' lock is a request, or a transaction left open: no endless wait."""
    with app.app_context(), database.connection_context():
        SchemaVersion.update(version=len(migrations.MIGRATIONS) - 1).execute()
    with open(database.obj.database + "-writers.lock", "ab") as open_transaction:
        fcntl.flock(open_transaction, fcntl.LOCK_EX)
        upgrade, upgraded = _upgrading_in_a_thread(runner)
        upgrade.join(10)
        gave_up = not upgrade.is_alive()
    assert gave_up
    assert (upgraded[0].exit_code, upgraded[0].output) == (
        1, "Error: the database is unavailable: database is locked\n")


def test_commands_before_the_schema_exists_say_to_upgrade_first(runner, app):
    with app.app_context():
        database.drop_tables([*ALL_MODELS, SchemaVersion])
    for args in (["keys", "create", "--user-id", "u"], ["keys", "list"], ["keys", "revoke", "1"],
                 ["crypto", "rotate"]):
        result = runner.invoke(args=args)
        assert (result.exit_code, result.output) == (1, (
            "Error: the database has no schema yet: run `flask --app potpie_flask db upgrade` "
            "first\n")), args
    assert runner.invoke(args=["db", "upgrade"]).exit_code == 0
    assert runner.invoke(args=["keys", "create", "--user-id", "u"]).exit_code == 0


def test_shell_preloads_the_models(app):
    context = app.make_shell_context()
    preloaded = {"app": app, "db": database, "Integration": Integration, "ApiKey": ApiKey,
                 "AuditEvent": AuditEvent}
    assert {name: context.get(name) for name in preloaded} == preloaded
