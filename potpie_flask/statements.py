"""SQL built once per database: Peewee queries compiled with named slots, then only bound.

Turning a Peewee query object into SQL costs more than running that SQL on a request
this small (see bench/NOTES.md). A Statement is an ordinary Peewee query,
written once with `slot(name, field)` where its values go; the first time it runs on
a database Peewee renders it, and every later run only binds values to the slots.
Values are converted with the field's own `db_value`, exactly as Peewee would. A
database that can keep the plan too (PostgreSQL's `prepare`) is given the SQL once.
"""
import weakref

import peewee

from .db import atomic, database


class _Slot:
    __slots__ = ("name", "convert")

    def __init__(self, name, convert):
        self.name = name
        self.convert = convert


def slot(name, field=None):
    """A named place for a value in a Statement, converted as `field` converts its values."""
    return peewee.Value(_Slot(name, field.db_value if field else None), converter=False)


# Columns the drivers (sqlite3, psycopg2) already return as the Python value Peewee would
# make. Exact types: a subclass may convert values its own way.
_NATIVE_FIELDS = (peewee.CharField, peewee.TextField, peewee.IntegerField)


class Statement:
    """A query built by `build()` on first use per database, then run with values for its slots."""

    def __init__(self, build):
        self._build = build
        self._compiled = weakref.WeakKeyDictionary()

    def _compile(self):
        db = database.obj
        compiled = self._compiled.get(db)
        if compiled is None:
            query = self._build()
            # Values Peewee added itself (LIMIT 1, say) stay as they are.
            sql, params = query.sql()
            if hasattr(db, "prepare"):
                sql = db.prepare(sql)
            # A UNION's columns are its first SELECT's.
            fields = getattr(getattr(query, "lhs", query), "selected_columns", None) or ()
            # A column of a WITH query has no converter: its values stay as the driver gave them.
            columns = ([field.name for field in fields],
                       [(field.name, field.python_value) for field in fields
                        if hasattr(field, "python_value") and type(field) not in _NATIVE_FIELDS])
            compiled = self._compiled[db] = (sql, params, columns)
        return compiled

    def bind(self, values):
        """The SQL and its parameters for these slot values."""
        sql, params, _ = self._compile()
        bound = []
        for param in params:
            if type(param) is _Slot:
                value = values[param.name]
                param = value if param.convert is None else param.convert(value)
            bound.append(param)
        return sql, bound

    def execute(self, **values):
        """Run the statement; returns the DB-API cursor."""
        return database.obj.execute_sql(*self.bind(values))

    def write(self, **values):
        """Run a write whose result nobody reads; PostgreSQL may send it with the next statement."""
        write(self.bind(values))

    def rows(self, model, **values):
        """Run a SELECT of `model` fields; a list of `model` instances, values converted as Peewee would."""
        names, converted = self._compile()[2]
        found = []
        for row in self.execute(**values).fetchall():
            data = dict(zip(names, row))
            for name, convert in converted:
                if data[name] is not None:
                    data[name] = convert(data[name])
            found.append(instance_of(model, data))
        return found

    def records(self, **values):
        """Run a SELECT of model fields; per row, its values by field name as the driver gave them."""
        names = self._compile()[2][0]
        return [dict(zip(names, row)) for row in self.execute(**values).fetchall()]

    def record(self, **values):
        """The first row's column values by field name, as the driver returned them; or None."""
        # fetchone, not records(): a list of one cost a GET 1% more instructions.
        row = self.execute(**values).fetchone()
        return None if row is None else dict(zip(self._compile()[2][0], row))

    def first(self, model, **values):
        """The first row as a `model` instance, or None."""
        found = self.rows(model, **values)
        return found[0] if found else None


def write(bound):
    """Send SQL and parameters from `Statement.bind` as a write whose result nobody reads."""
    db = database.obj
    send_later = getattr(db, "write_later", db.execute_sql)
    send_later(*bound)


def commit_together(bounds):
    """Commit writes bound by `Statement.bind` as one transaction: all of them, or none."""
    # SQLite's writers skip Peewee's transaction objects; inside a transaction already, the
    # writes are a savepoint of it, as atomic() nests.
    db = database.obj
    together = getattr(db, "commit_together", None)
    if together is not None and not db.in_transaction():
        together(bounds)
        return
    with atomic():
        for bound in bounds:
            write(bound)


def insert(model):
    """INSERT of every column of `model` but an auto-incremented key, from slots named as fields."""
    fields = [f for f in model._meta.sorted_fields if not isinstance(f, peewee.AutoField)]
    return Statement(lambda: model.insert({f: slot(f.name, f) for f in fields}))


def update_columns(model, names):
    """UPDATE of the named columns of the row with the same primary key, from slots named as fields."""
    key = model._meta.primary_key
    fields = [model._meta.fields[name] for name in names]
    return Statement(lambda: model.update({f: slot(f.name, f) for f in fields})
                     .where(key == slot(key.name, key)))


def instance_of(model, values):
    """A `model` instance whose column values are `values` (the dict itself, not a copy)."""
    # Peewee's constructor and row wrapper set every field through its descriptor, which
    # cost more than the SELECT of a row; filling __data__ gives the same instance.
    instance = model(__no_default__=True)
    instance.__data__ = values
    return instance


def values_of(row):
    """Every field of a model instance by name (None where unset), for insert and update_columns."""
    return {name: row.__data__.get(name) for name in row._meta.fields}
