"""Peewee models: API keys, integrations and their audit trail."""
import datetime as dt

import orjson
import peewee

from .db import database


# The largest integer both databases store and bind (SQLite's INTEGER, PostgreSQL's bigint).
LARGEST_INTEGER = 2**63 - 1


def utcnow():
    """The current time in UTC, naive, as every timestamp column stores it."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class UtcDateTimeField(peewee.DateTimeField):
    """A naive UTC datetime; SQLite's text is read with fromisoformat, not by trying strptime formats."""

    def python_value(self, value):
        return dt.datetime.fromisoformat(value) if isinstance(value, str) else value


class BaseModel(peewee.Model):
    class Meta:
        database = database
        legacy_table_names = False


class ApiKey(BaseModel):
    """An API key of a user; only the SHA-256 of the key is stored."""

    user_id = peewee.CharField(max_length=255, index=True)
    email = peewee.CharField(max_length=255, null=True)
    label = peewee.CharField(max_length=255, default="")
    key_hash = peewee.CharField(max_length=64, unique=True)
    prefix = peewee.CharField(max_length=7)
    created_at = UtcDateTimeField()
    revoked_at = UtcDateTimeField(null=True)


class Integration(BaseModel):
    """One saved integration of an owner, with its credentials encrypted in `credentials`."""

    id = peewee.CharField(max_length=36, primary_key=True)
    owner = peewee.CharField(max_length=255)
    name = peewee.CharField(max_length=255)
    # casefold(strip(name)): the unique index that makes names case-insensitively unique.
    name_key = peewee.CharField(max_length=1024)
    integration_type = peewee.CharField(max_length=32)
    status = peewee.CharField(max_length=16)
    active = peewee.BooleanField()
    unique_identifier = peewee.CharField(max_length=255)
    created_at = UtcDateTimeField()
    updated_at = UtcDateTimeField()

    org_slug = peewee.CharField(max_length=255, null=True)
    installation_id = peewee.CharField(max_length=255, null=True)
    workspace_id = peewee.CharField(max_length=255, null=True)
    project_id = peewee.CharField(max_length=255, null=True)

    instance_name = peewee.CharField(max_length=255, null=True)
    created_via = peewee.CharField(max_length=64, null=True)
    version = peewee.CharField(max_length=64, null=True)
    description = peewee.TextField(null=True)
    tags = peewee.TextField(default="[]")

    # Non-secret parts of auth_data; NULL token_type means no auth_data was ever given.
    token_type = peewee.CharField(max_length=64, null=True)
    expires_at = UtcDateTimeField(null=True)
    auth_scope = peewee.TextField(null=True)
    # Fernet token of {"access_token", "refresh_token", "code"}: the only place secrets live.
    credentials = peewee.TextField(null=True)
    has_access_token = peewee.BooleanField(default=False)

    SCOPE_KEYS = ("org_slug", "installation_id", "workspace_id", "project_id")
    METADATA_KEYS = ("instance_name", "created_via", "version", "description", "tags")
    AUTH_COLUMNS = ("token_type", "expires_at", "auth_scope", "credentials", "has_access_token")

    def scope_data(self):
        """The four scope keys, null when unset."""
        return scope_data_of(self.__data__)

    def metadata(self):
        """The five metadata keys as stored."""
        return metadata_of(self.__data__)

    class Meta:
        indexes = (
            (("owner", "unique_identifier"), True),
            (("owner", "name_key"), True),
        )


# The list's own order (SPEC section 6: created_at desc, then integration_id), read straight
# off the index: with every column ascending, SQLite sorted each page's ties in a temp b-tree.
Integration.add_index(Integration.owner, Integration.created_at.desc(), Integration.id,
                      name="integration_owner_newest_first")


class AuditEvent(BaseModel):
    """One committed change of an integration; kept after the integration is deleted."""

    integration_id = peewee.CharField(max_length=36)
    owner = peewee.CharField(max_length=255)
    action = peewee.CharField(max_length=16)
    timestamp = UtcDateTimeField()
    request_id = peewee.CharField(max_length=128, null=True)
    changes = peewee.TextField()

    class Meta:
        indexes = ((("owner", "integration_id", "timestamp"), False),)


def scope_data_of(values):
    """The four scope keys from an integration's column values by name (all of them)."""
    return {key: values[key] for key in Integration.SCOPE_KEYS}


def metadata_of(values):
    """The five metadata keys from an integration's column values by name (all of them)."""
    tags = values["tags"]
    return {
        "instance_name": values["instance_name"],
        "created_via": values["created_via"],
        "version": values["version"],
        "description": values["description"],
        # Most integrations have no tags: skip the JSON parser for them.
        "tags": [] if tags == "[]" else orjson.loads(tags),
    }


class SchemaVersion(BaseModel):
    """The schema version `db upgrade` last applied."""

    version = peewee.IntegerField()


ALL_MODELS = (ApiKey, Integration, AuditEvent)
