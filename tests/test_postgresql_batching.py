"""PostgreSQL: writes queued to travel with the next statement keep their transaction semantics."""
import pytest
import peewee

from potpie_flask.db import database
from potpie_flask.models import ApiKey, utcnow
from potpie_flask.statements import insert

pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)

INSERT_KEY = insert(ApiKey)


def key_row(key_hash):
    return dict(user_id="batching", email=None, label="", key_hash=key_hash, prefix="sk-",
                created_at=utcnow(), revoked_at=None)


def stored_hashes():
    return sorted(row.key_hash for row in ApiKey.select().where(ApiKey.user_id == "batching"))


def test_a_write_failing_inside_a_savepoint_fails_there_and_the_transaction_goes_on(app):
    with app.app_context(), database.connection_context():
        with database.atomic():
            INSERT_KEY.write(**key_row("a" * 64))
            with pytest.raises(peewee.IntegrityError):
                with database.atomic():
                    INSERT_KEY.write(**key_row("a" * 64))
            INSERT_KEY.write(**key_row("b" * 64))
        assert stored_hashes() == ["a" * 64, "b" * 64]


def test_a_queued_write_that_fails_at_commit_rolls_back_the_whole_transaction(app):
    with app.app_context(), database.connection_context():
        with pytest.raises(peewee.IntegrityError):
            with database.atomic():
                INSERT_KEY.write(**key_row("c" * 64))
                assert stored_hashes() == ["c" * 64]  # a read sends what was queued
                INSERT_KEY.write(**key_row("d" * 64))
                INSERT_KEY.write(**key_row("c" * 64))
        assert stored_hashes() == []
        with database.atomic():
            INSERT_KEY.write(**key_row("e" * 64))
        assert stored_hashes() == ["e" * 64]
