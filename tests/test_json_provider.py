"""Response bodies from orjson say exactly what Flask's standard encoder says."""
import datetime as dt
import json
import uuid

import pytest
from flask import jsonify

from potpie_flask import create_app
from potpie_flask.json_provider import OrjsonProvider


@pytest.fixture
def plain_app(instance_path):
    return create_app({"RATELIMIT_ENABLED": False})


def body_of(app, *args, **kwargs):
    with app.test_request_context():
        response = jsonify(*args, **kwargs)
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"
        return response.get_data()


@pytest.mark.parametrize("value", [
    {"success": True, "data": [{"name": "Ünïcode ✓", "n": 1, "ok": False, "none": None}],
     "error": None},
    {"when": dt.datetime(2025, 1, 15, 10, 30), "id": uuid.UUID(int=7), "list": [1.5, "x"]},
    {"big": 2 ** 70, "lone": "a\ud800b"},
    {1: "integer key", "order": {"z": 1, "a": 2}},
], ids=["envelope", "datetime-and-uuid", "beyond-orjson", "integer-key"])
def test_a_body_parses_to_what_the_standard_encoder_makes_of_it(plain_app, value):
    body = body_of(plain_app, value)
    standard = json.dumps(value, default=plain_app.json.default)
    assert json.loads(body) == json.loads(standard)
    assert body.endswith(b"}\n")


def test_keys_keep_their_order_and_bodies_are_compact(plain_app):
    assert isinstance(plain_app.json, OrjsonProvider)
    assert body_of(plain_app, {"z": 1, "a": [1, 2]}) == b'{"z":1,"a":[1,2]}\n'


def test_orjson_writes_utf8_and_the_fallback_escapes(plain_app):
    assert body_of(plain_app, {"name": "Zürich"}) == '{"name":"Zürich"}\n'.encode()
    assert body_of(plain_app, {"name": "Zürich", "lone": "\ud800"}) == (
        b'{"name":"Z\\u00fcrich","lone":"\\ud800"}\n')


def test_debug_output_is_indented_by_the_standard_encoder(plain_app):
    plain_app.debug = True
    assert body_of(plain_app, {"a": 1}) == b'{\n  "a": 1\n}\n'
