"""GET /api/v2/openapi.json and /api/v2/docs: the OpenAPI document and Swagger UI, no key needed.

A blueprint of its own, so the API blueprint's key check never runs for it. The
Swagger UI assets come from the swagger-ui-bundle package: the page works on
machines without internet and references no other host.
"""
from flask import Blueprint, jsonify, render_template_string, send_from_directory
from swagger_ui_bundle import swagger_ui_path

from . import openapi

bp = Blueprint("docs", __name__, url_prefix="/api/v2")

# The only files the page loads; anything else under the bundle stays unserved.
ASSETS = frozenset({"swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png",
                     "favicon-16x16.png"})

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>potpie-flask API</title>
  <link rel="stylesheet" href="{{ url_for('docs.asset', filename='swagger-ui.css') }}">
  <link rel="icon" type="image/png" href="{{ url_for('docs.asset', filename='favicon-32x32.png') }}">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{{ url_for('docs.asset', filename='swagger-ui-bundle.js') }}"></script>
  <script>
    window.ui = SwaggerUIBundle({
      url: {{ url_for('docs.openapi_document') | tojson }},
      dom_id: "#swagger-ui",
      deepLinking: true,
      // null: never send the document to validator.swagger.io.
      validatorUrl: null,
      presets: [SwaggerUIBundle.presets.apis],
      layout: "BaseLayout"
    });
  </script>
</body>
</html>
"""


@bp.get("/openapi.json")
def openapi_document():
    return jsonify(openapi.document())


@bp.get("/docs")
def docs_page():
    return render_template_string(_PAGE)


@bp.get("/docs/assets/<filename>")
def asset(filename):
    if filename not in ASSETS:
        return jsonify(detail="Not Found"), 404
    return send_from_directory(str(swagger_ui_path), filename, max_age=86400)
