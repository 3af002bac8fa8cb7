"""The /api/v2 blueprint: route -> schema -> domain operation -> envelope."""
from flask import Blueprint, current_app, g, jsonify
from werkzeug.routing import BaseConverter

from . import integrations, representation
from .auth import require_api_key
from .bodies import validated_body, validated_query
from .schemas import CHANGE_BODY, LIST_QUERY, PAGE_QUERY, SAVE_BODY

bp = Blueprint("api", __name__, url_prefix="/api/v2")
bp.before_request(require_api_key)


class IntegrationIdConverter(BaseConverter):
    """The last segment of `/integrations/<id>`: any but `save`, the save route's own.

    Read as an id, `GET /integrations/save` answered 404 "Integration not found" and a 405
    there listed GET, PATCH, PUT and DELETE as allowed; now every method but POST is 405
    with `Allow: POST`. Other non-UUID ids still reach the routes, which answer 404, and
    so does `save` before `/audit` or `/template`, which are no route of their own.
    """

    regex = r"(?!save\Z)[^/]+"
    part_isolating = True


@bp.record_once
def _register_converter(state):
    state.app.url_map.converters["integration_id"] = IntegrationIdConverter


def verb(name):
    """Name the verb of a route's failure messages ("Failed to <verb> integration: ...")."""
    def mark(view):
        view.verb = name
        return view
    return mark


def ok(data, **extra):
    return jsonify(success=True, data=data, error=None, **extra)


def _vault():
    return current_app.extensions["potpie_vault"]


@bp.post("/integrations/save")
@verb("save")
def save_integration():
    fields = validated_body(SAVE_BODY)
    row = integrations.save(g.user_id, fields, _vault(), g.request_id)
    return ok(representation.integration(row))


@bp.get("/integrations")
@verb("list")
def list_integrations():
    query = validated_query(LIST_QUERY)
    limit, offset = query.pop("limit"), query.pop("offset")
    records, total = integrations.list_integrations(g.user_id, query, limit, offset)
    return ok([representation.integration_of(record) for record in records],
              pagination={"limit": limit, "offset": offset, "total": total})


@bp.get("/integrations/<integration_id:integration_id>")
@verb("read")
def read_integration(integration_id):
    validated_query()
    return ok(representation.integration_of(integrations.read(g.user_id, integration_id)))


@bp.route("/integrations/<integration_id:integration_id>", methods=["PATCH", "PUT"])
@verb("update")
def change_integration(integration_id):
    fields = validated_body(CHANGE_BODY)
    row = integrations.update(g.user_id, integration_id, fields, _vault(), g.request_id)
    return ok(representation.integration(row))


@bp.delete("/integrations/<integration_id:integration_id>")
@verb("delete")
def delete_integration(integration_id):
    validated_query()
    integrations.delete(g.user_id, integration_id, g.request_id)
    response = current_app.response_class(status=204)
    del response.headers["Content-Type"]
    return response


@bp.get("/integrations/<integration_id>/audit")
@verb("read")
def audit_trail(integration_id):
    page = validated_query(PAGE_QUERY)
    events, total = integrations.audit_trail(g.user_id, integration_id, **page)
    return ok([representation.audit_event(event) for event in events],
              pagination={**page, "total": total})


@bp.get("/integrations/<integration_id>/template")
@verb("read")
def clone_template(integration_id):
    validated_query()
    row = integrations.get(g.user_id, integration_id)
    name = integrations.free_copy_name(g.user_id, row)
    return ok(representation.clone_template(row, name))
