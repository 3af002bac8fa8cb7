"""The JSON shapes of integrations and audit events (SPEC section 5)."""
import json

def timestamp(value):
    """UTC (stored naive) as ISO 8601 with six fractional digits and a Z; None stays None."""
    return None if value is None else value.isoformat(timespec="microseconds") + "Z"


def integration(row):
    """The one representation every route returns; never a secret."""
    scope = row.scope_data()
    return {
        "integration_id": row.id,
        "name": row.name,
        "integration_type": row.integration_type,
        "status": row.status,
        "active": row.active,
        "unique_identifier": row.unique_identifier,
        "created_by": row.owner,
        "created_at": timestamp(row.created_at),
        "updated_at": timestamp(row.updated_at),
        "has_auth_data": row.has_access_token,
        "has_scope_data": bool(scope["org_slug"] or scope["workspace_id"]),
        "metadata": row.metadata(),
        "scope_data": scope,
        "auth_data": {
            "token_type": row.token_type,
            "expires_at": timestamp(row.expires_at),
            "scope": row.auth_scope,
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
        "changes": json.loads(event.changes),
    }
