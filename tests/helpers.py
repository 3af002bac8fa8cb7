"""Shared bodies and small helpers for the resource-route tests."""
import re

LIST = "/api/v2/integrations"
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
NOT_FOUND = {"success": False, "data": None, "error": "Integration not found"}
# A well-formed UUID4 that no test ever creates.
NEVER_EXISTED = "00000000-0000-4000-8000-000000000000"

FULL_BODY = {
    "name": "Production Sentry",
    "integration_type": "sentry",
    "status": "active",
    "unique_identifier": "prod-sentry",
    "auth_data": {"access_token": "sentry_token_here", "token_type": "Bearer",
                  "scope": "org:read"},
    "scope_data": {"org_slug": "my-company"},
    "metadata": {"instance_name": "Production Sentry", "created_via": "api",
                 "description": "Error monitoring", "tags": ["production", "monitoring"]},
}


def one(iid):
    return f"{LIST}/{iid}"


def create(api, **fields):
    """Save an integration and return its representation."""
    r = api.save(fields)
    assert r.status_code == 200, r.get_json()
    return r.get_json()["data"]


def problem(loc, msg, type_, **ctx):
    entry = {"loc": loc, "msg": msg, "type": type_}
    if ctx:
        entry["ctx"] = ctx
    return entry
