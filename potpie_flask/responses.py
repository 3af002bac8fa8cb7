"""Marshmallow schemas of the response bodies, for the OpenAPI document (SPEC sections 2-6).

`representation.py` builds the bodies; these schemas describe them, and the test
suite validates every response it receives against the document built from them,
so the two cannot drift apart unnoticed.
"""
from marshmallow import Schema, fields

from .schemas import INTEGRATION_TYPES, STATUSES, IntegrationSaveSchema

_EXAMPLE_TIME = "2025-01-15T10:30:00.000000Z"


def _text(**kwargs):
    """A string key that is always present and may be null."""
    return fields.String(required=True, allow_none=True, **kwargs)


def _timestamp(**kwargs):
    return fields.DateTime(required=True, metadata={"example": _EXAMPLE_TIME}, **kwargs)


class StoredMetadataSchema(Schema):
    """`metadata` as stored: always its five keys."""

    instance_name = _text()
    created_via = _text()
    version = _text()
    description = _text()
    tags = fields.List(fields.String(), required=True)


class StoredScopeDataSchema(Schema):
    """`scope_data` as stored: always its four keys, null when unset."""

    org_slug = _text()
    installation_id = _text()
    workspace_id = _text()
    project_id = _text()


class PublicAuthDataSchema(Schema):
    """The non-secret parts of `auth_data`; all null when no credentials were ever given."""

    token_type = _text()
    expires_at = fields.DateTime(required=True, allow_none=True,
                                 metadata={"example": _EXAMPLE_TIME})
    scope = _text()


class IntegrationSchema(Schema):
    """The integration object every route returns (SPEC section 5); never a secret."""

    integration_id = fields.UUID(required=True)
    name = fields.String(required=True)
    integration_type = fields.String(required=True, metadata={"enum": list(INTEGRATION_TYPES)})
    status = fields.String(required=True, metadata={"enum": list(STATUSES)})
    active = fields.Boolean(required=True)
    unique_identifier = fields.String(required=True)
    created_by = fields.String(required=True)
    created_at = _timestamp()
    updated_at = _timestamp()
    has_auth_data = fields.Boolean(
        required=True, metadata={"description": "true when an access_token is stored"})
    has_scope_data = fields.Boolean(
        required=True, metadata={"description": "true when org_slug or workspace_id is set"})
    metadata = fields.Nested(StoredMetadataSchema, required=True)
    scope_data = fields.Nested(StoredScopeDataSchema, required=True)
    auth_data = fields.Nested(PublicAuthDataSchema, required=True)


class CloneTemplateSchema(IntegrationSaveSchema):
    """A POST /save body that creates a copy: no credentials, no unique_identifier."""

    class Meta:
        exclude = ("unique_identifier", "auth_data")


class PaginationSchema(Schema):
    limit = fields.Integer(required=True, metadata={"minimum": 1, "maximum": 200})
    offset = fields.Integer(required=True, metadata={"minimum": 0})
    total = fields.Integer(required=True, metadata={"minimum": 0})


class AuditEntrySchema(Schema):
    """One committed change; credentials appear only as "[redacted]"."""

    timestamp = _timestamp()
    user = fields.String(required=True)
    action = fields.String(required=True, metadata={"enum": ["create", "update", "delete"]})
    resource_type = fields.String(required=True, metadata={"enum": ["integration"]})
    integration_id = fields.UUID(required=True)
    request_id = _text()
    changes = fields.Dict(
        keys=fields.String(), values=fields.Nested("ChangeSchema"), required=True,
        metadata={"description": "every field that changed; `auth_data` is one key"})


class ChangeSchema(Schema):
    """Old and new value of one field (null on the side where it did not exist)."""

    old = fields.Raw(required=True, allow_none=True)
    new = fields.Raw(required=True, allow_none=True)


def _envelope(name, data, **more):
    """A success envelope: success, data, error (null), then `more`, in SPEC section 4's order."""
    return Schema.from_dict({"success": fields.Boolean(required=True), "data": data,
                             "error": _text(metadata={"description": "null on success"}),
                             **more}, name=name)


IntegrationEnvelopeSchema = _envelope("IntegrationEnvelopeSchema",
                                      fields.Nested(IntegrationSchema, required=True))
IntegrationListEnvelopeSchema = _envelope(
    "IntegrationListEnvelopeSchema", fields.List(fields.Nested(IntegrationSchema), required=True),
    pagination=fields.Nested(PaginationSchema, required=True))
AuditTrailEnvelopeSchema = _envelope(
    "AuditTrailEnvelopeSchema", fields.List(fields.Nested(AuditEntrySchema), required=True),
    pagination=fields.Nested(PaginationSchema, required=True))
CloneTemplateEnvelopeSchema = _envelope("CloneTemplateEnvelopeSchema",
                                        fields.Nested(CloneTemplateSchema, required=True))


class FailureEnvelopeSchema(Schema):
    """A failed operation: `error` is `Failed to <verb> integration: <reason>` or
    `Integration not found`."""

    success = fields.Boolean(required=True, metadata={"enum": [False]})
    data = fields.Dict(required=True, allow_none=True, metadata={"description": "always null"})
    error = fields.String(required=True)


class ProblemSchema(Schema):
    """One validation problem in the FastAPI/pydantic-v1 shape (SPEC section 3)."""

    loc = fields.List(
        fields.Raw(metadata={"anyOf": [{"type": "string"}, {"type": "integer"}]}),
        required=True, metadata={"description": '"body" or "query", then the path'})
    msg = fields.String(required=True)
    type = fields.String(required=True, metadata={"example": "value_error.missing"})
    ctx = fields.Dict(metadata={"description": "limit_value, enum_values, ..."})


class ValidationFailedSchema(Schema):
    detail = fields.List(fields.Nested(ProblemSchema), required=True)


class DetailSchema(Schema):
    """`{"detail": "<sentence>"}`: authentication, routing, media type, size, rate limit."""

    detail = fields.String(required=True)


class HealthSchema(Schema):
    status = fields.String(required=True, metadata={"enum": ["ok"]})


class ReadySchema(Schema):
    status = fields.String(required=True, metadata={"enum": ["ready"]})


class NotReadySchema(Schema):
    status = fields.String(required=True, metadata={"enum": ["unavailable"]})
