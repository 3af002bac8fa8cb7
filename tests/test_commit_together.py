"""statements.commit_together: bound writes commit as one transaction, or nest in an open one."""
import peewee
import pytest
from psycopg2.extensions import TRANSACTION_STATUS_IDLE

from potpie_flask.db import database
from potpie_flask.models import ApiKey, utcnow
from potpie_flask.statements import commit_together, insert

from .helpers import assert_sqlite_write_locks_free

INSERT_KEY = insert(ApiKey)


def key(key_hash):
    return INSERT_KEY.bind(dict(user_id="together", email=None, label="", key_hash=key_hash,
                                prefix="sk-", created_at=utcnow(), revoked_at=None))


def stored_hashes():
    return sorted(row.key_hash for row in ApiKey.select().where(ApiKey.user_id == "together"))


def test_all_of_the_writes_or_none_of_them(app, backend):
    with app.app_context(), database.connection_context():
        with pytest.raises(peewee.IntegrityError):
            commit_together([key("a" * 64), key("b" * 64), key("a" * 64)])
        # The driver's own state: Peewee never sees SQLite's commit_together open.
        conn = database.connection()
        if backend == "sqlite":
            assert not conn.in_transaction
            assert_sqlite_write_locks_free(app)
        else:
            assert conn.get_transaction_status() == TRANSACTION_STATUS_IDLE
        assert stored_hashes() == []
        commit_together([key("a" * 64), key("b" * 64)])
        assert stored_hashes() == ["a" * 64, "b" * 64]


def test_inside_a_transaction_they_are_a_savepoint_of_it(app):
    with app.app_context(), database.connection_context():
        with database.atomic():
            commit_together([key("c" * 64)])
            with pytest.raises(peewee.IntegrityError):
                commit_together([key("d" * 64), key("c" * 64)])
            commit_together([key("e" * 64)])
        assert stored_hashes() == ["c" * 64, "e" * 64]
        with pytest.raises(RuntimeError):
            with database.atomic():
                commit_together([key("f" * 64)])
                raise RuntimeError("the enclosing transaction fails")
        assert stored_hashes() == ["c" * 64, "e" * 64]
