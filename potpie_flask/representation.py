"""The JSON shapes of integrations and audit events (SPEC section 5)."""
import orjson


def timestamp(value):
    """UTC (stored naive) as ISO 8601 with six fractional digits and a Z; None stays None."""
    if value is None:
        return None
    # isoformat() leaves a zero fraction out; its timespec argument costs twice the call.
    return value.isoformat() + ("Z" if value.microsecond else ".000000Z")


def integration(row):
    """The one representation every route returns; never a secret."""
    # Read from the row's value dict: what Peewee's field descriptors would return, without
    # a descriptor call per field (a list page builds 50 of these).
    values = row.__data__.get
    scope = row.scope_data()
    return {
        "integration_id": values("id"),
        "name": values("name"),
        "integration_type": values("integration_type"),
        "status": values("status"),
        "active": values("active"),
        "unique_identifier": values("unique_identifier"),
        "created_by": values("owner"),
        "created_at": timestamp(values("created_at")),
        "updated_at": timestamp(values("updated_at")),
        "has_auth_data": values("has_access_token"),
        "has_scope_data": bool(scope["org_slug"] or scope["workspace_id"]),
        "metadata": row.metadata(),
        "scope_data": scope,
        "auth_data": {
            "token_type": values("token_type"),
            "expires_at": timestamp(values("expires_at")),
            "scope": values("auth_scope"),
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
