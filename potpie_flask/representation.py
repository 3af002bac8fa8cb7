"""The JSON shapes of integrations and audit events (SPEC section 5)."""
import datetime as dt

import orjson

from .models import metadata_of, scope_data_of

# What follows SQLite's text of a naive datetime, by its length: with microseconds, without.
_SQLITE_TEXT_ZONE = {26: "Z", 19: ".000000Z"}


def timestamp(value):
    """UTC as ISO 8601 with six fractional digits and a Z; None stays None.

    `value` is a naive datetime, or SQLite's text of one as a record read from it holds.
    """
    if value is None:
        return None
    if type(value) is str:
        # sqlite3 stores a naive datetime as isoformat(" "), with or without microseconds:
        # rewriting that text takes a third of the time of parsing and formatting it again
        # (a page holds 100).
        zone = _SQLITE_TEXT_ZONE.get(len(value))
        if zone and value[10] == " ":
            return value[:10] + "T" + value[11:] + zone
        value = dt.datetime.fromisoformat(value)
    # isoformat() leaves a zero fraction out; its timespec argument costs twice the call.
    return value.isoformat() + ("Z" if value.microsecond else ".000000Z")


def integration(row):
    """The representation of an Integration model instance (what saves and changes return)."""
    return integration_of(row.__data__)


def integration_of(values):
    """The one representation every route returns, from an integration's column values by name.

    Never a secret. The values are what Peewee's fields hold, or what the driver returned
    for a record (SQLite: timestamps as text, booleans as 0 and 1): a list page and GET
    one are read as records, because building 50 model instances only to read them back
    cost more than the page's query.
    """
    scope = scope_data_of(values)
    return {
        "integration_id": values["id"],
        "name": values["name"],
        "integration_type": values["integration_type"],
        "status": values["status"],
        "active": bool(values["active"]),
        "unique_identifier": values["unique_identifier"],
        "created_by": values["owner"],
        "created_at": timestamp(values["created_at"]),
        "updated_at": timestamp(values["updated_at"]),
        "has_auth_data": bool(values["has_access_token"]),
        "has_scope_data": bool(scope["org_slug"] or scope["workspace_id"]),
        "metadata": metadata_of(values),
        "scope_data": scope,
        "auth_data": {
            "token_type": values["token_type"],
            "expires_at": timestamp(values["expires_at"]),
            "scope": values["auth_scope"],
        },
    }


def clone_template(row, name):
    """A body POST /save accepts to create a copy named `name`: no credentials, no identifier."""
    return {
        "name": name,
        "integration_type": row.integration_type,
        "status": row.status,
        "active": row.active,
        "scope_data": row.scope_data(),
        "metadata": row.metadata(),
    }


def audit_event(event):
    """One entry of an audit trail."""
    return {
        "timestamp": timestamp(event.timestamp),
        "user": event.owner,
        "action": event.action,
        "resource_type": "integration",
        "integration_id": event.integration_id,
        "request_id": event.request_id,
        "changes": orjson.loads(event.changes),
    }
