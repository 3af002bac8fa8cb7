"""Domain operations on integrations; each write is one transaction with its audit row.

Nothing here knows about HTTP: callers pass the owner, validated fields, the
credential vault and a request id, and get model rows (or, for what a route only
represents, the rows' column values) or domain errors back.
"""
import datetime as dt
import functools
import re
import typing
import uuid

import orjson
import peewee

from .change_statement import COLUMNS_OF, audit_insert_from, change_statement
from .db import atomic, database, supports_row_locks, supports_writing_ctes
from .models import AuditEvent, Integration, metadata_of, scope_data_of, utcnow
from .postgresql import rolled_back_by_the_server
from .statements import (Statement, commit_together, insert, instance_of, slot, update_columns,
                         values_of, write)

SECRET_FIELDS = ("access_token", "refresh_token", "code")
REDACTED = "[redacted]"
# A save races another one for the same identifier at most this often before it sees the winner.
_SAVE_ATTEMPTS = 3
# A write PostgreSQL rolled back to end a deadlock runs at most this often in all.
_ROLLED_BACK_ATTEMPTS = 3
_ONE_MICROSECOND = dt.timedelta(microseconds=1)
# Peewee's name for the unique index on (owner, name_key) (models.Integration.Meta).
_NAME_INDEX = "integration_owner_name_key"
# The form integration ids are stored in (str(uuid4())), read in any case (RFC 9562: a UUID's
# hex digits are case-insensitive on input; Swift's uuidString is upper case, say).
_INTEGRATION_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
                             re.IGNORECASE)


class IntegrationNotFound(Exception):
    """No integration with this id for this owner."""


class NameTaken(Exception):
    """Another integration of the owner already has this name."""


class TypeChangeRefused(Exception):
    """The unique_identifier belongs to an integration of another type."""


def name_key(name):
    """What makes two names the same: case-insensitive, surrounding whitespace ignored."""
    return name.strip().casefold()


def _locked(query):
    return query.for_update() if supports_row_locks() else query


def _owners_one_by(field):
    """The owner's integration whose `field` has the slot of the same name."""
    return Integration.select().where(
        (Integration.owner == slot("owner", Integration.owner))
        & (field == slot(field.name, field))).limit(1)


_OWNED = Statement(lambda: _owners_one_by(Integration.id))
_OWNED_LOCKED = Statement(lambda: _locked(_owners_one_by(Integration.id)))
_BY_IDENTIFIER = Statement(lambda: _owners_one_by(Integration.unique_identifier))
_BY_IDENTIFIER_LOCKED = Statement(
    lambda: _locked(_owners_one_by(Integration.unique_identifier)))
_INSERT = insert(Integration)
# Columns that change together. An UPDATE names only the groups that changed: SQLite rewrites
# the index entries of every column an UPDATE names, changed or not (a PATCH of the metadata
# took 80 us longer inside the write lock), and 6 groups bound the statements to 64.
_COLUMN_GROUPS = (("name", "name_key"), ("status",), ("active",), Integration.SCOPE_KEYS,
                  Integration.METADATA_KEYS, Integration.AUTH_COLUMNS)
_UPDATES = {}
# The same UPDATEs on PostgreSQL, made conditional on the row being as read, with the audit
# INSERT in the same statement (see _written_if_unchanged).
_UPDATES_IF_UNCHANGED = {}
_DELETE = Statement(lambda: Integration.delete().where(Integration.id == slot("id", Integration.id)))
_INSERT_AUDIT = insert(AuditEvent)
# A new row's columns before a save sets them: NULL, then the model's defaults.
_NULLS = dict.fromkeys(Integration._meta.fields)


def _known_id(integration_id):
    """The id as stored; IntegrationNotFound unless a UUID, before it reaches SQL (or NUL would)."""
    if not _INTEGRATION_ID.fullmatch(integration_id):
        raise IntegrationNotFound()
    return integration_id.lower()


def _found(row):
    if row is None:
        raise IntegrationNotFound()
    return row


def _owned(statement, owner, integration_id):
    return _found(statement.first(Integration, owner=owner, id=_known_id(integration_id)))


def _again_when_rolled_back(write):
    """Run a write once more when PostgreSQL rolled it back to end a deadlock, up to a bound.

    Nothing of it stands then, and run again it finds what the other transaction did (a
    name now taken: 409): a 503 "Database unavailable" would blame a healthy database.
    Inside a caller's transaction (flask shell) the whole of that is rolled back: not here.
    """
    @functools.wraps(write)
    def run(*args, **kwargs):
        for _ in range(_ROLLED_BACK_ATTEMPTS - 1):
            try:
                return write(*args, **kwargs)
            except peewee.OperationalError as exc:
                if not rolled_back_by_the_server(exc) or database.in_transaction():
                    raise
        return write(*args, **kwargs)
    return run


def get(owner, integration_id):
    """The owner's integration with this id, or IntegrationNotFound."""
    return _owned(_OWNED, owner, integration_id)


def read(owner, integration_id):
    """What get() finds, as column values by name (a GET only represents it)."""
    return _found(_OWNED.record(owner=owner, id=_known_id(integration_id)))


def free_copy_name(owner, row):
    """A name for a copy of the row that none of the owner's integrations holds yet."""
    for n in range(1, 1000):
        suffix = " (copy)" if n == 1 else f" (copy {n})"
        candidate = row.name[:255 - len(suffix)] + suffix
        taken = Integration.select().where(
            (Integration.owner == owner) & (Integration.name_key == name_key(candidate)))
        if not taken.exists():
            return candidate
    return f"{row.name[:200]} ({uuid.uuid4()})"


LIST_FILTERS = ("integration_type", "status", "active", "org_slug")
# A page's rows are only represented: the credentials token (the longest value of a row) and
# the name's key are never shown, so they are not fetched 50 times either.
_LISTED_COLUMNS = [field for field in Integration._meta.sorted_fields
                   if field.name not in ("credentials", "name_key")]
# (page with total, total alone) per combination of filters given: built on first use, so
# that a request only binds its values (building SQL costs more than running it).
_LISTS = {}


def _list_statements(keys):
    """A page of the owner's matching integrations, each row with their total; the total alone.

    The total is a subquery of the page's statement, which the database runs once: one round
    trip to PostgreSQL instead of two, and the page and its total read in one snapshot. Only
    a page past the end (no row to carry it) needs the total's statement of its own.
    """
    def matching(*columns):
        query = Integration.select(*columns).where(
            Integration.owner == slot("owner", Integration.owner))
        for key in keys:
            field = getattr(Integration, key)
            query = query.where(field == slot(key, field))
        return query

    def total():
        return matching(peewee.fn.COUNT(peewee.SQL("*")))

    def page():
        return (matching(peewee.Alias(total(), "total"), *_LISTED_COLUMNS)
                .order_by(Integration.created_at.desc(), Integration.id)
                .limit(slot("limit")).offset(slot("offset")))

    return Statement(page), Statement(total)


def list_integrations(owner, filters, limit, offset):
    """One page of the owner's integrations, newest first, as column values; and the total.

    Each record also holds the total, under "total", which no representation reads.
    """
    keys = tuple(key for key in LIST_FILTERS if key in filters)
    if keys not in _LISTS:
        _LISTS[keys] = _list_statements(keys)
    page, total = _LISTS[keys]
    records = page.records(owner=owner, limit=limit, offset=offset, **filters)
    if records:
        return records, records[0]["total"]
    return records, total.execute(owner=owner, **filters).fetchone()[0]


def audit_trail(owner, integration_id, limit, offset):
    """One page of an integration's audit events, newest first, and their total."""
    integration_id = _known_id(integration_id)

    def matching(*columns):
        return AuditEvent.select(*columns).where(
            (AuditEvent.owner == owner) & (AuditEvent.integration_id == integration_id))

    total = matching(peewee.fn.COUNT(peewee.SQL("*")))
    # The total travels with the page, as the list's does: both read in one snapshot, so a
    # change audited meanwhile never makes them disagree.
    page = list(matching(peewee.Alias(total, "total"), *AuditEvent._meta.sorted_fields)
                .order_by(AuditEvent.timestamp.desc(), AuditEvent.id.desc())
                .limit(limit).offset(offset))
    count = page[0].total if page else total.scalar()
    if count == 0:
        raise IntegrationNotFound()
    return page, count


@_again_when_rolled_back
def save(owner, fields, vault, request_id=None):
    """Create an integration, or update the owner's one with the same unique_identifier."""
    for attempt in range(_SAVE_ATTEMPTS):
        try:
            if fields.get("unique_identifier"):
                ahead = _read_ahead(owner, fields, vault)
                if ahead.changes == {}:
                    return ahead.stored
                if ahead.stored is not None and _written_if_unchanged(ahead, request_id):
                    return ahead.changed
                with atomic():
                    return _upsert(owner, fields, vault, request_id, ahead)
            # Nothing to read first: the row and its audit entry are built and bound
            # before the transaction, which then only sends them (SQLite's write lock is
            # held for the statements alone).
            row, changes = _new_row(owner, fields, vault)
            commit_together(_insertion(row, changes, request_id))
            return row
        except peewee.IntegrityError:
            if _name_held_by_another(owner, fields):
                raise NameTaken() from None
            if attempt == _SAVE_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def _name_held_by_another(owner, fields):
    query = Integration.select().where(
        (Integration.owner == owner) & (Integration.name_key == name_key(fields["name"])))
    if fields.get("unique_identifier"):
        query = query.where(Integration.unique_identifier != fields["unique_identifier"])
    return query.exists()


class _Ahead(typing.NamedTuple):
    stored: Integration = None
    changed: Integration = None
    changes: dict = None


def _read_ahead(owner, fields, vault):
    """The stored integration with the save's unique_identifier, and what the save would change."""
    stored = _BY_IDENTIFIER.first(Integration, owner=owner,
                                  unique_identifier=fields["unique_identifier"])
    if stored is None or stored.integration_type != fields["integration_type"]:
        return _Ahead()
    return _ahead_of(stored, fields, vault)


def _ahead_of(stored, fields, vault):
    """What writing `fields` over a row read with no lock would change, worked out on a copy.

    Clients re-save what they already saved (a periodic sync, a retry): when nothing
    would change, that read needs neither a transaction nor a lock, so it never waits
    for, nor holds up, a writer. A change is worked out here too, outside the lock (the
    credentials' encryption included); `_written_if_unchanged` and `_change_locked` write
    it only if the row is still the same.
    """
    changed = instance_of(Integration, dict(stored.__data__))
    return _Ahead(stored, changed, _apply(changed, fields, vault, creating=False))


def _change_locked(existing, ahead, fields, vault, request_id):
    """Change the row read under the lock: as worked out ahead when nobody wrote it since."""
    if ahead.stored is not None and existing.__data__ == ahead.stored.__data__:
        return _store_change(ahead.changed, existing.__data__, ahead.changes, request_id)
    return _change(existing, fields, vault, request_id)


def _upsert(owner, fields, vault, request_id, ahead):
    existing = _BY_IDENTIFIER_LOCKED.first(
        Integration, owner=owner, unique_identifier=fields["unique_identifier"])
    if existing is None:
        row, changes = _new_row(owner, fields, vault)
        for bound in _insertion(row, changes, request_id):
            write(bound)
        return row
    if existing.integration_type != fields["integration_type"]:
        raise TypeChangeRefused()
    return _change_locked(existing, ahead, fields, vault, request_id)


def _new_row(owner, fields, vault):
    """A new integration from saved fields, and its changes in audit form; nothing written."""
    now = utcnow()
    integration_id = str(uuid.uuid4())
    # Every column, as a row read back holds them; the model's defaults, then the save's.
    row = instance_of(Integration, {
        **_NULLS,
        **Integration._meta.get_default_dict(),
        "id": integration_id,
        "owner": owner,
        "integration_type": fields["integration_type"],
        "unique_identifier": fields.get("unique_identifier")
        or f"{fields['integration_type']}-{integration_id}",
        "status": "active",
        "active": True,
        "created_at": now,
        "updated_at": now,
    })
    defaults = {"scope_data": {}, "metadata": {}}
    return row, _apply(row, {**defaults, **fields}, vault, creating=True)


def _insertion(row, changes, request_id):
    """The bound INSERTs of a new row and its audit entry."""
    return (_INSERT.bind(values_of(row)),
            _INSERT_AUDIT.bind(_audit_values(row, "create", changes, row.created_at, request_id)))


@_again_when_rolled_back
def update(owner, integration_id, fields, vault, request_id=None):
    """Change some fields of the owner's integration (PATCH/PUT)."""
    try:
        if supports_writing_ctes() and "auth_data" not in fields:
            # PostgreSQL: the server locks, compares, writes and audits in one statement,
            # so the row's lock is held across no round trip (change_statement.py).
            return _changed_by_one_statement(owner, integration_id, fields, request_id)
        if supports_row_locks():
            # PostgreSQL, with credentials, which differ or not only once the stored ones are
            # decrypted: the row is read locked and the change worked out holding its lock.
            # Changes of one row queue on it instead of finding the row changed and starting
            # over (68% of the benchmark's one-row PATCHes did, written only if unchanged).
            with atomic():
                return _change(_owned(_OWNED_LOCKED, owner, integration_id), fields, vault,
                               request_id)
        # SQLite's write lock holds up every writer: work the change out before taking it.
        ahead = _ahead_of(_owned(_OWNED, owner, integration_id), fields, vault)
        if ahead.changes == {}:
            return ahead.stored
        with atomic():
            row = _owned(_OWNED_LOCKED, owner, integration_id)
            return _change_locked(row, ahead, fields, vault, request_id)
    except peewee.IntegrityError as exc:
        # The name index is the only unique constraint an update can break; anything else
        # (a trigger, a check added by hand) is not the client's to fix.
        if _is_name_clash(exc):
            raise NameTaken() from None
        raise


def _is_name_clash(exc):
    """Whether an IntegrityError is the (owner, name_key) unique index refusing a name."""
    # Told by the constraint, never by the message's text: PostgreSQL's DETAIL quotes the
    # row's values, which the client chose.
    diagnostics = getattr(getattr(exc, "orig", None), "diag", None)
    if diagnostics is not None:
        return diagnostics.constraint_name == _NAME_INDEX
    return str(exc) == "UNIQUE constraint failed: integration.owner, integration.name_key"


def _changed_by_one_statement(owner, integration_id, fields, request_id):
    """PostgreSQL: the change locked, compared, written and audited by the server at once."""
    keys = tuple(key for key in COLUMNS_OF if key in fields)
    found = change_statement(keys).record(
        id=_known_id(integration_id), owner=owner, now=utcnow(), request_id=request_id,
        **_columns_given(fields, None))
    return instance_of(Integration, _found(found))


def _change(row, fields, vault, request_id):
    before = dict(row.__data__)
    return _store_change(row, before, _apply(row, fields, vault, creating=False), request_id)


def _store_change(row, before, changes, request_id):
    """Write the row, changed from `before` by `changes`, and its audit entry; nothing when none."""
    if changes:
        now = row.updated_at = _next_updated_at(before)
        _update_of(row, before).write(**values_of(row))
        _record(row, "update", changes, now, request_id)
    return row


def _next_updated_at(before):
    """Now, yet always after the updated_at of the row as it was: each write is a later version."""
    return max(utcnow(), before["updated_at"] + _ONE_MICROSECOND)


def _written_if_unchanged(ahead, request_id):
    """PostgreSQL: write the change worked out ahead, and its audit entry, in one statement.

    The UPDATE applies only if the row is still, column for column, the row read ahead
    (the comparison `_change_locked` makes under the lock), so the statement needs no
    transaction of its own: one round trip instead of two, and the row's lock is held
    only while the statement runs and commits. False when the row changed or went away
    since (or on SQLite, whose WITH cannot hold an UPDATE): the caller then locks and reads.
    updated_at (and the audit entry's timestamp) is taken before the statement is sent:
    should it wait for a lock that another transaction then releases unchanged, it is
    earlier than the commit by that wait (the locked path reads the clock once locked).
    """
    if not supports_writing_ctes():
        return False
    row, before = ahead.changed, ahead.stored.__data__
    row.updated_at = _next_updated_at(before)
    values = values_of(row)
    values.update({"was_" + name: value for name, value in values_of(ahead.stored).items()})
    values.update(_audit_values(row, "update", ahead.changes, row.updated_at, request_id))
    statement = _changed_groups_statement(row, before, _UPDATES_IF_UNCHANGED,
                                          _update_if_unchanged)
    return statement.execute(**values).fetchone() is not None


def _update_if_unchanged(names):
    """UPDATE of `names` of the row still as the `was_<column>` slots say, and its audit INSERT."""
    fields = Integration._meta.sorted_fields

    def build():
        as_read = peewee.Expression(peewee.Tuple(*fields), "IS NOT DISTINCT FROM",
                                    peewee.Tuple(*(slot("was_" + f.name, f) for f in fields)))
        changed = (Integration
                   .update({f: slot(f.name, f) for f in map(Integration._meta.fields.get, names)})
                   # The key first, so that the row is found through its index.
                   .where((Integration.id == slot("was_id", Integration.id)) & as_read)
                   .returning(Integration.id, Integration.owner, Integration.updated_at)
                   .cte("changed"))
        return (audit_insert_from(changed, (changed,), slot("action"), slot("changes"))
                .with_cte(changed).returning(AuditEvent.id))

    return Statement(build)


def _update_of(row, before):
    """The UPDATE of the column groups in which the row differs from `before`, and updated_at."""
    return _changed_groups_statement(row, before, _UPDATES,
                                     lambda names: update_columns(Integration, names))


def _changed_groups_statement(row, before, built, build):
    """`build(names)` of the groups in which the row differs from `before`, built once."""
    after = row.__data__
    groups = tuple(group for group in _COLUMN_GROUPS
                   if any(after.get(name) != before.get(name) for name in group))
    statement = built.get(groups)
    if statement is None:
        names = [name for group in groups for name in group] + ["updated_at"]
        statement = built[groups] = build(names)
    return statement


@_again_when_rolled_back
def delete(owner, integration_id, request_id=None):
    """Delete the owner's integration and its credentials; the audit trail stays."""
    with atomic():
        row = _owned(_OWNED_LOCKED, owner, integration_id)
        changes = {key: {"old": value, "new": None}
                   for key, value in _public_state(row.__data__).items()}
        if row.token_type is not None:
            changes["auth_data"] = {"old": REDACTED, "new": None}
        _DELETE.write(id=row.id)
        # After the row's last version, as each update's is, so the trail's order holds even
        # if the clock steps back.
        _record(row, "delete", changes, _next_updated_at(row.__data__), request_id)


def _public_state(values):
    """The fields of a row's column values that an audit entry shows."""
    return {
        "name": values["name"],
        "integration_type": values["integration_type"],
        "status": values["status"],
        "active": values["active"],
        "unique_identifier": values["unique_identifier"],
        "scope_data": scope_data_of(values),
        "metadata": metadata_of(values),
    }


def _apply(row, fields, vault, creating):
    """Copy the given fields onto the row; return what changed, in audit form."""
    # The row's values are set directly: Peewee's field setters cost more than the rules.
    values = row.__data__
    before = {} if creating else _public_state(values)
    values.update(_columns_given(fields, values["name"]))
    after = _public_state(values)
    changes = {
        key: {"old": before.get(key), "new": value}
        for key, value in after.items()
        if creating or before[key] != value
    }
    if "auth_data" in fields:
        had_auth = values["token_type"] is not None
        if _set_auth(values, fields["auth_data"], vault):
            changes["auth_data"] = {"old": REDACTED if had_auth and not creating else None,
                                    "new": REDACTED}
    return changes


def _columns_given(fields, name):
    """The column values that the given fields set; instance_name defaults to the name.

    `name` is the stored name, which a given name replaces; None leaves instance_name None
    when neither is given (`change_statement` then takes the stored name).
    """
    values = {key: fields[key] for key in ("name", "status", "active") if key in fields}
    if "name" in fields:
        values["name_key"] = name_key(fields["name"])
    if "scope_data" in fields:
        scope = fields["scope_data"]
        values.update({key: scope.get(key) for key in Integration.SCOPE_KEYS})
    if "metadata" in fields:
        metadata = _metadata_with_defaults(fields["metadata"], fields.get("name", name))
        metadata["tags"] = orjson.dumps(metadata["tags"]).decode()
        values.update(metadata)
    return values


def _metadata_with_defaults(given, name):
    def value(key, default=None):
        return default if given.get(key) is None else given[key]

    return {
        "instance_name": value("instance_name", name),
        "created_via": value("created_via", "manual"),
        "version": value("version"),
        "description": value("description"),
        "tags": value("tags", []),
    }


def _set_auth(values, given, vault):
    """Store auth_data in a row's column values; False when it equals what is stored already."""
    token_type = "Bearer" if given.get("token_type") is None else given["token_type"]
    secrets = {key: given[key] for key in SECRET_FIELDS if given.get(key)}
    stored_secrets = vault.open(values["credentials"]) if values["credentials"] else None
    if (values["token_type"], values["expires_at"], values["auth_scope"], stored_secrets) == (
            token_type, given.get("expires_at"), given.get("scope"), secrets):
        return False
    values.update(token_type=token_type, expires_at=given.get("expires_at"),
                  auth_scope=given.get("scope"), credentials=vault.seal(secrets),
                  has_access_token="access_token" in secrets)
    return True


def _record(row, action, changes, timestamp, request_id):
    _INSERT_AUDIT.write(**_audit_values(row, action, changes, timestamp, request_id))


def _audit_values(row, action, changes, timestamp, request_id):
    return {
        "integration_id": row.id,
        "owner": row.owner,
        "action": action,
        "timestamp": timestamp,
        "request_id": request_id,
        "changes": orjson.dumps(changes).decode(),
    }
