"""`db upgrade` and `flask shell` (SPEC sections 7 and 8)."""
from potpie_flask import migrations
from potpie_flask.db import database
from potpie_flask.models import ALL_MODELS, SchemaVersion


def test_db_upgrade_is_idempotent(runner, app):
    first = runner.invoke(args=["db", "upgrade"])
    second = runner.invoke(args=["db", "upgrade"])
    assert first.exit_code == second.exit_code == 0
    assert second.output == f"schema at version {len(migrations.MIGRATIONS)} (up to date)\n"
    with app.app_context():
        assert [row.version for row in SchemaVersion.select()] == [len(migrations.MIGRATIONS)]
        assert all(database.table_exists(m._meta.table_name) for m in ALL_MODELS)


def test_db_upgrade_creates_a_fresh_schema(runner, app):
    with app.app_context():
        database.drop_tables([*ALL_MODELS, SchemaVersion])
        assert migrations.current_version() == 0
    result = runner.invoke(args=["db", "upgrade"])
    assert result.exit_code == 0
    assert result.output == f"schema at version {len(migrations.MIGRATIONS)} (was 0)\n"


def test_shell_preloads_the_models(app):
    context = app.make_shell_context()
    for name in ("app", "db", "Integration", "ApiKey", "AuditEvent"):
        assert name in context
    assert context["db"] is database and context["app"] is app
