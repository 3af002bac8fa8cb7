"""The embedded SQLite database: writers queue on a lock file; the WAL is checkpointed and bounded."""
import shutil
import sqlite3
import subprocess
import sys

import pytest
from playhouse import db_url

from potpie_flask.db import database
from potpie_flask.models import Integration
from potpie_flask.sqlite import QueuedWritersSqlite

from .servers import ROOT

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


def test_sqlite_itself_never_checkpoints_on_commit(app):
    with app.app_context(), database.connection_context():
        assert database.execute_sql("PRAGMA wal_autocheckpoint").fetchone() == (0,)


_WRITER = """
import os, sys
from potpie_flask import create_app, integrations
from potpie_flask.db import database
from potpie_flask.sqlite import QueuedWritersSqlite
QueuedWritersSqlite.CHECKPOINT_EVERY = 20
QueuedWritersSqlite.LOCKED_CHECKPOINT_AFTER_FRAMES = 200
app = create_app({"RATELIMIT_ENABLED": False})
vault = app.extensions["potpie_vault"]
longest = 0
with app.app_context(), database.connection_context():
    for i in range(int(sys.argv[2])):
        integrations.save("writer", {"name": f"{sys.argv[1]} {i}", "integration_type": "jira"}, vault)
        longest = max(longest, os.path.getsize(database.database + "-wal"))
print(longest)
"""


def test_the_wal_stays_bounded_while_writers_never_pause(app, instance_path):
    # Checkpoints run after the lock is released never catch up with writers that do not
    # pause, and SQLite starts a WAL over only once all of it is copied: unchecked, these
    # saves grew it to 28-48 MB in two runs (nearly every frame ever written).
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, f"writer {n}", "500"],
                                cwd=ROOT, stdout=subprocess.PIPE, text=True)
               for n in range(3)]
    try:
        printed = [w.communicate(timeout=60)[0] for w in writers]
    finally:
        for w in writers:
            w.kill()
    assert [w.returncode for w in writers] == [0, 0, 0]
    longest = [int(line) for line in printed]
    frame = 4096 + 24
    # 200 frames, plus what the others append before the writer whose checkpoint found them
    # passed commits again and checkpoints holding the lock: 1,000-1,500 frames in all when
    # measured.
    assert max(longest) <= 3000 * frame
    with app.app_context(), database.connection_context():
        assert Integration.select().where(Integration.owner == "writer").count() == 1500
