"""PostgreSQL: a change of an integration locked, compared, written and audited in one statement.

PATCHes of one row queue on its lock. Read `FOR UPDATE` and written in a second message,
the row's lock was held across a round trip to the worker and its Python, on top of the
COMMIT's WAL flush (bench/NOTES.md, "PostgreSQL, a PATCH in one statement"). Sent as one
statement, the lock is held only while the server runs it and commits.

So the server works out what depends on the stored row, by the rules `integrations._apply`
and `integrations._store_change` follow in Python (tests/test_change.py pins each one on
both databases):

- the given columns are written when any of them differs from the stored value, and
  nothing at all (not even updated_at) when none does;
- metadata's instance_name, when neither it nor a name is given, is the stored name;
- updated_at is now, yet always after the stored updated_at. "Now" is read before the
  statement is sent: a change that waited for the row's lock is stamped earlier than its
  commit by that wait, as `integrations._written_if_unchanged` is;
- the audit entry lists, old and new, each public field whose value changed.

A change with auth_data never comes here: whether its credentials differ from the stored
ones is known only by decrypting them.
"""
import peewee
from peewee import SQL, Case, Expression, Select, Tuple, fn

from .db import database
from .models import AuditEvent, Integration
from .statements import Statement, slot

# The public fields a change may give, in the order an audit entry lists them, and the
# columns that hold each one.
COLUMNS_OF = {
    "name": ("name", "name_key"),
    "status": ("status",),
    "active": ("active",),
    "scope_data": Integration.SCOPE_KEYS,
    "metadata": Integration.METADATA_KEYS,
}
_FIELDS = Integration._meta.sorted_fields
_built = {}


def change_statement(keys):
    """The statement that changes the public fields `keys` (a tuple in COLUMNS_OF's order).

    Its slots: `id` and `owner` of the row; a value per column of those fields (for
    instance_name, None to take the stored name); `now` and `request_id`. It returns the
    row as it is after the statement, changed or not; no row when the owner has none
    with that id.
    """
    statement = _built.get(keys)
    if statement is None:
        statement = _built[keys] = Statement(lambda: _build(keys))
    return statement


def _build(keys):
    stored = (Integration.select(*_FIELDS)
              .where((Integration.id == slot("id", Integration.id))
                     & (Integration.owner == slot("owner", Integration.owner)))
              .for_update()
              .cte("stored"))
    given = {}
    for key in keys:
        for name in COLUMNS_OF[key]:
            field = Integration._meta.fields[name]
            given[field] = slot(name, field)
    if Integration.instance_name in given:
        given[Integration.instance_name] = fn.COALESCE(given[Integration.instance_name],
                                                       stored.c.name)
    after = Expression(stored.c.updated_at, "+", SQL("interval '1 microsecond'"))
    changed = (Integration
               .update({**given, Integration.updated_at: fn.GREATEST(
                   slot("now", Integration.updated_at), after)})
               .from_(stored)
               .where((Integration.id == stored.c.id) & _differ(
                   [_compared(field.name, getattr(stored.c, field.name)) for field in given],
                   [_compared(field.name, value) for field, value in given.items()]))
               .returning(*_FIELDS)
               .cte("changed"))
    audit = audit_insert_from(changed, (changed, stored), SQL("'update'"),
                              _changes(keys, stored, changed)).cte("audit")
    unchanged = (Select((stored,), [getattr(stored.c, f.name) for f in _FIELDS])
                 .where(~fn.EXISTS(Select((changed,), [SQL("1")]))))
    return (Select((changed,), [getattr(changed.c, f.name) for f in _FIELDS])
            .union_all(unchanged)
            .with_cte(stored, changed, audit)
            .bind(database))


def audit_insert_from(changed, sources, action, changes):
    """The INSERT of an audit entry for each row that `changed` (an UPDATE's RETURNING) holds.

    The entry takes the row's id, owner and new updated_at; `action` and `changes` are SQL
    or slots, and the request id is the slot `request_id`.
    """
    entry = [changed.c.id, changed.c.owner, action, changed.c.updated_at, slot("request_id"),
             changes]
    return AuditEvent.insert_from(Select(sources, entry), [
        AuditEvent.integration_id, AuditEvent.owner, AuditEvent.action,
        AuditEvent.timestamp, AuditEvent.request_id, AuditEvent.changes])


def _changes(keys, stored, changed):
    """The audit entry's JSON text: `"key": {"old": ..., "new": ...}` per field that changed."""
    entries = []
    for key in keys:
        was, now = _public(key, stored), _public(key, changed)
        names = [name for name in COLUMNS_OF[key] if name != "name_key"]
        differs = _differ([_compared(n, getattr(stored.c, n)) for n in names],
                          [_compared(n, getattr(changed.c, n)) for n in names])
        entries.append(Case(None, [(differs, fn.CONCAT(
            SQL(_literal(f'"{key}": ')),
            fn.json_build_object(SQL("'old'"), was, SQL("'new'"), now)))]))
    return fn.CONCAT(SQL("'{'"), fn.CONCAT_WS(SQL("', '"), *entries), SQL("'}'"))


def _differ(these, those):
    return Expression(Tuple(*these), "IS DISTINCT FROM", Tuple(*those))


def _compared(name, value):
    """A column's value as compared: tags as JSON, since older rows spaced their arrays out."""
    return peewee.Cast(value, "jsonb") if name == "tags" else value


def _public(key, row):
    """A public field's value in a row of the statement, as JSON where it is an object."""
    if key == "scope_data":
        return _object(row, Integration.SCOPE_KEYS)
    if key == "metadata":
        return _object(row, Integration.METADATA_KEYS)
    return getattr(row.c, key)


def _object(row, names):
    pairs = []
    for name in names:
        value = getattr(row.c, name)
        # tags hold a JSON array as text: it goes in as the array.
        pairs += [SQL(_literal(name)), peewee.Cast(value, "json") if name == "tags" else value]
    return fn.json_build_object(*pairs)


def _literal(text):
    """A constant as SQL text: a parameter in its place would have no type PREPARE can infer."""
    return "'" + text.replace("'", "''") + "'"
