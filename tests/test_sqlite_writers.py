"""The embedded SQLite database: writers queue on a lock file; the WAL is checkpointed outside it."""
import shutil
import sqlite3

import pytest
from playhouse import db_url

from potpie_flask.db import database
from potpie_flask.sqlite import QueuedWritersSqlite

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


def test_saves_reach_the_database_file_itself_not_only_its_wal(api, app, tmp_path):
    saves = QueuedWritersSqlite.CHECKPOINT_EVERY + 10
    for i in range(saves):
        assert api.save({"name": f"n{i}", "integration_type": "jira"}).status_code == 200
    main_file_only = tmp_path / "copy.sqlite3"
    shutil.copyfile(db_url.parse(app.config["DATABASE_URL"])["database"], main_file_only)
    with sqlite3.connect(main_file_only) as copy:
        checkpointed = copy.execute("SELECT count(*) FROM integration").fetchone()[0]
    # The connection checkpointed after its CHECKPOINT_EVERY-th commit (a few of which
    # were the schema's); without checkpoints the file itself would hold none.
    assert QueuedWritersSqlite.CHECKPOINT_EVERY - 10 <= checkpointed <= saves


def test_commits_never_checkpoint_while_holding_the_writers_lock(app):
    with app.app_context(), database.connection_context():
        assert database.execute_sql("PRAGMA wal_autocheckpoint").fetchone() == (0,)
