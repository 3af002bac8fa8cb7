"""Every row of SPEC section 3's table, plus 413 and 415, on the save route."""
import json

import pytest
from marshmallow import ValidationError, validate

from potpie_flask import create_app
from potpie_flask.config import ConfigError
from potpie_flask.db import database
from potpie_flask.fields import Text
from potpie_flask.models import Integration
from potpie_flask.schemas import ScopeDataSchema, StrictSchema

from .faults import SAVE

ENUM_TYPES = ["sentry", "jira", "linear", "confluence", "slack", "github"]
ENUM_STATUSES = ["active", "inactive", "pending", "error"]
VALID = {"name": "N", "integration_type": "jira"}


def problem(loc, msg, type_, **ctx):
    entry = {"loc": ["body", *loc], "msg": msg, "type": type_}
    if ctx:
        entry["ctx"] = ctx
    return entry


def enum_problem(loc, values):
    permitted = ", ".join(f"'{v}'" for v in values)
    return problem(loc, f"value is not a valid enumeration member; permitted: {permitted}",
                   "type_error.enum", enum_values=values)


EXPIRES_AT_PROBLEM = problem(["auth_data", "expires_at"], "invalid datetime format",
                             "value_error.datetime")


def bad_expires_at(sent):
    """A save whose credentials expire at `sent`, and the one problem it answers."""
    return {**VALID, "auth_data": {"code": "c", "expires_at": sent}}, [EXPIRES_AT_PROBLEM]


CASES = {
    "missing name": ({"integration_type": "jira"},
                     [problem(["name"], "field required", "value_error.missing")]),
    "bad enum": ({"name": "N", "integration_type": "Sentry"},
                 [enum_problem(["integration_type"], ENUM_TYPES)]),
    "bad status": ({**VALID, "status": "on"}, [enum_problem(["status"], ENUM_STATUSES)]),
    "blank name": ({**VALID, "name": "   "},
                   [problem(["name"], "ensure this value has at least 1 characters",
                            "value_error.any_str.min_length", limit_value=1)]),
    "long name": ({**VALID, "name": "x" * 256},
                  [problem(["name"], "ensure this value has at most 255 characters",
                           "value_error.any_str.max_length", limit_value=255)]),
    "integration_type null": ({"name": "N", "integration_type": None},
                              [problem(["integration_type"], "none is not an allowed value",
                                       "type_error.none.not_allowed")]),
    "unique_identifier with a control character": (
        {**VALID, "unique_identifier": "id\u0007"},
        [problem(["unique_identifier"], "must not contain control characters", "value_error")]),
    "long unique_identifier": ({**VALID, "unique_identifier": "u" * 256},
                               [problem(["unique_identifier"],
                                        "ensure this value has at most 255 characters",
                                        "value_error.any_str.max_length", limit_value=255)]),
    "name not a string": ({**VALID, "name": 5}, [problem(["name"], "str type expected",
                                                         "type_error.str")]),
    "active as string": ({**VALID, "active": "true"},
                         [problem(["active"], "value could not be parsed to a boolean",
                                  "type_error.bool")]),
    "active as 1": ({**VALID, "active": 1},
                    [problem(["active"], "value could not be parsed to a boolean",
                             "type_error.bool")]),
    "scope not a dict": ({**VALID, "scope_data": "acme"},
                         [problem(["scope_data"], "value is not a valid dict",
                                  "type_error.dict")]),
    "tags not a list": ({**VALID, "metadata": {"tags": "a,b"}},
                        [problem(["metadata", "tags"], "value is not a valid list",
                                 "type_error.list")]),
    "bad datetime": bad_expires_at("tomorrow"),
    # Valid ISO 8601, but an hour before year 1 or after year 9999 once moved to UTC.
    "expires_at before year 1 in UTC": bad_expires_at("0001-01-01T00:00:00+01:00"),
    "expires_at after year 9999 in UTC": bad_expires_at("9999-12-31T23:59:59-01:00"),
    # Python 3.11's fromisoformat takes any one character before a Z.
    "expires_at with a stray character before its zone": bad_expires_at("2030-01-01T08:00:00xZ"),
    "expires_at with two zones": bad_expires_at("2030-01-01T08:00:00zz"),
    "expires_at a date without a time": bad_expires_at("2030-01-01"),
    "expires_at an hour without minutes": bad_expires_at("2030-01-01T10"),
    "expires_at with x between date and time": bad_expires_at("2030-01-01x10:00"),
    "expires_at a week date": bad_expires_at("2030-W01-1T10:00"),
    "unknown field named as marshmallow's schema-level errors": (
        {**VALID, "metadata": {"_schema": 1}},
        [problem(["metadata", "_schema"], "extra fields not permitted", "value_error.extra")]),
    "unknown top-level field": ({**VALID, "owner": "me"},
                                [problem(["owner"], "extra fields not permitted",
                                         "value_error.extra")]),
    "unknown nested field": ({**VALID, "auth_data": {"code": "c", "password": "p"}},
                             [problem(["auth_data", "password"], "extra fields not permitted",
                                      "value_error.extra")]),
    "too many tags": ({**VALID, "metadata": {"tags": [f"t{i}" for i in range(51)]}},
                      [problem(["metadata", "tags"], "ensure this value has at most 50 items",
                               "value_error.list.max_items", limit_value=50)]),
    "empty tag at index": ({**VALID, "metadata": {"tags": ["ok", ""]}},
                           [problem(["metadata", "tags", 1],
                                    "ensure this value has at least 1 characters",
                                    "value_error.any_str.min_length", limit_value=1)]),
    "blank tags": ({**VALID, "metadata": {"tags": [" ", "ok ", "\u00a0"]}},
                   [problem(["metadata", "tags", index],
                            "ensure this value has at least 1 characters",
                            "value_error.any_str.min_length", limit_value=1)
                    for index in (0, 2)]),
    "null name": ({**VALID, "name": None},
                  [problem(["name"], "none is not an allowed value",
                           "type_error.none.not_allowed")]),
    "null status": ({**VALID, "status": None},
                    [problem(["status"], "none is not an allowed value",
                             "type_error.none.not_allowed")]),
    "null active": ({**VALID, "active": None},
                    [problem(["active"], "none is not an allowed value",
                             "type_error.none.not_allowed")]),
    "control character in name": ({**VALID, "name": "a\x07b"},
                                  [problem(["name"], "must not contain control characters",
                                           "value_error")]),
    # str.strip() takes these for whitespace: they are refused, not dropped.
    "information separators around the name": (
        {**VALID, "name": "\x1fa\x1c"},
        [problem(["name"], "must not contain control characters", "value_error")]),
    "next line (C1) after the name": (
        {**VALID, "name": "a\x85"},
        [problem(["name"], "must not contain control characters", "value_error")]),
    "whitespace in identifier": ({**VALID, "unique_identifier": "a b"},
                                 [problem(["unique_identifier"], "must not contain whitespace",
                                          "value_error")]),
    "credential-less auth_data": ({**VALID, "auth_data": {"token_type": "Bearer",
                                                          "access_token": ""}},
                                  [problem(["auth_data"],
                                           "Provide at least one of: access_token, "
                                           "refresh_token, or code", "value_error")]),
    "long token": ({**VALID, "auth_data": {"access_token": "t" * 8193}},
                   [problem(["auth_data", "access_token"],
                            "ensure this value has at most 8192 characters",
                            "value_error.any_str.max_length", limit_value=8192)]),
    "body not an object": ([VALID], [problem([], "value is not a valid dict",
                                             "type_error.dict")]),
}


@pytest.mark.parametrize("body,expected", CASES.values(), ids=CASES.keys())
def test_each_rule_answers_422_in_the_pydantic_shape(api, app, body, expected):
    r = api.post(SAVE, json=body)
    assert r.status_code == 422
    assert r.get_json() == {"detail": expected}
    with app.app_context():
        assert Integration.select().count() == 0


def test_every_problem_is_listed_not_just_the_first(api):
    r = api.post(SAVE, json={"integration_type": "Sentry", "active": "yes", "extra": 1,
                             "metadata": {"tags": [1]}})
    assert r.status_code == 422
    assert r.get_json()["detail"] == [
        problem(["name"], "field required", "value_error.missing"),
        enum_problem(["integration_type"], ENUM_TYPES),
        problem(["active"], "value could not be parsed to a boolean", "type_error.bool"),
        problem(["metadata", "tags", 0], "str type expected", "type_error.str"),
        problem(["extra"], "extra fields not permitted", "value_error.extra"),
    ]


NO_CREDENTIAL = problem(["auth_data"], "Provide at least one of: access_token, refresh_token, "
                                       "or code", "value_error")


def test_cross_field_rule_waits_for_the_fields_it_reads(api):
    r = api.post(SAVE, json={**VALID, "auth_data": {"access_token": 7}})
    assert r.get_json()["detail"] == [
        problem(["auth_data", "access_token"], "str type expected", "type_error.str")]


@pytest.mark.parametrize("auth_data,first", [
    ({"token_type": 7}, problem(["auth_data", "token_type"], "str type expected",
                                "type_error.str")),
    ({"scope": 5}, problem(["auth_data", "scope"], "str type expected", "type_error.str")),
    ({"tokn": "t"}, problem(["auth_data", "tokn"], "extra fields not permitted",
                            "value_error.extra")),
])
def test_cross_field_rule_reads_only_the_credentials(api, auth_data, first):
    # The three fields it reads are valid (absent), so both problems are listed at once.
    r = api.post(SAVE, json={**VALID, "auth_data": auth_data})
    assert (r.status_code, r.get_json()["detail"]) == (422, [first, NO_CREDENTIAL])


@pytest.mark.parametrize("raw,pos,msg", [
    ("", 0, "Expecting value"),
    ('{"name": "N",', 13, "Expecting property name enclosed in double quotes"),
    ('{"name": NaN}', 0, "NaN is not valid JSON"),
    ('\ufeff{"name": "N"}', 0, "Unexpected UTF-8 BOM (decode using utf-8-sig)"),
    # The bad byte is the 13th, after a character of two bytes: the 12th character.
    (b'{"name": "\xc3\xa9\xff"}', 11, "body is not valid UTF-8"),
])
def test_body_that_is_not_json_is_a_jsondecode_problem(api, raw, pos, msg):
    r = api.post(SAVE, data=raw, content_type="application/json")
    assert r.status_code == 422
    detail = r.get_json()["detail"]
    assert len(detail) == 1
    assert detail[0]["loc"] == ["body", pos]
    assert detail[0]["msg"] == msg
    assert detail[0]["type"] == "value_error.jsondecode"


def test_null_optional_objects_mean_not_given(api):
    r = api.post(SAVE, json={**VALID, "auth_data": None, "scope_data": None, "metadata": None,
                             "unique_identifier": None})
    assert r.status_code == 200
    data = r.get_json()["data"]
    assert data["unique_identifier"] == f"jira-{data['integration_id']}"
    assert data["metadata"]["tags"] == []


def test_null_tags_mean_empty(api):
    r = api.post(SAVE, json={**VALID, "metadata": {"tags": None, "version": None}})
    assert r.get_json()["data"]["metadata"]["tags"] == []


@pytest.mark.parametrize("sent", ["2030-05-01T08:00:00", "2030-05-01 08:00", "2030-05-01T08:00Z",
                                  "2030-05-01T10:00:00.000+02:00",
                                  # RFC 3339 allows both letters in lower case.
                                  "2030-05-01t08:00:00z"])
def test_expires_at_is_stored_in_utc_and_without_a_zone_taken_as_utc(api, sent):
    r = api.post(SAVE, json={**VALID, "auth_data": {"code": "c", "expires_at": sent}})
    assert r.get_json()["data"]["auth_data"]["expires_at"] == "2030-05-01T08:00:00.000000Z"


def test_a_change_with_expires_at_out_of_range_in_utc_is_422(api):
    saved = api.post(SAVE, json=VALID).get_json()["data"]
    r = api.patch(f"/api/v2/integrations/{saved['integration_id']}",
                  json={"auth_data": {"code": "c", "expires_at": "0001-01-01T00:00:00+05:00"}})
    assert r.status_code == 422
    assert r.get_json() == {"detail": [EXPIRES_AT_PROBLEM]}


def test_body_over_the_limit_is_413(api):
    body = '{"name": "' + "x" * (64 * 1024) + '"}'
    r = api.post(SAVE, data=body, content_type="application/json")
    assert r.status_code == 413
    assert r.get_json() == {"detail": "Request body too large"}


def test_body_of_exactly_the_limit_is_read(api):
    body = json.dumps(VALID)
    body += " " * (64 * 1024 - len(body))
    r = api.post(SAVE, data=body, content_type="application/json")
    assert (r.status_code, r.get_json()["data"]["name"]) == (200, VALID["name"])
    r = api.post(SAVE, data=body + " ", content_type="application/json")
    assert (r.status_code, r.get_json()) == (413, {"detail": "Request body too large"})


@pytest.mark.parametrize("name,value,least", [("MAX_CONTENT_LENGTH", "64KiB", 1),
                                              ("MAX_CONTENT_LENGTH", 0, 1),
                                              ("RETRY_AFTER_SECONDS", "five", 0),
                                              ("RETRY_AFTER_SECONDS", True, 0)])
def test_a_setting_every_request_reads_is_refused_at_start(instance_path, name, value, least):
    with pytest.raises(ConfigError) as refused:
        create_app({"RATELIMIT_ENABLED": False, name: value})
    assert str(refused.value) == (f"POTPIE_{name} must be a whole number of at least {least}, "
                                  f"not {value!r}")


@pytest.mark.parametrize("value", [2**31, "\u00b2", -1])
def test_the_lock_timeout_is_refused_at_start_beyond_what_postgresql_takes(instance_path,
                                                                           value):
    with pytest.raises(ConfigError) as refused:
        create_app({"RATELIMIT_ENABLED": False, "DATABASE_LOCK_TIMEOUT_MS": value})
    assert str(refused.value) == ("POTPIE_DATABASE_LOCK_TIMEOUT_MS must be a whole number "
                                  f"from 0 to 2147483647, not {value!r}")


@pytest.mark.parametrize("name,value,message", [
    ("SQLITE_SYNCHRONOUS", "FUL", "must be one of NORMAL, FULL, EXTRA, OFF, not 'FUL'"),
    ("SQLITE_SYNCHRONOUS", 2, "must be one of NORMAL, FULL, EXTRA, OFF, not 2"),
    ("SQLITE_BUSY_TIMEOUT_MS", "x", "must be a whole number from 0 to 2147483647, not 'x'"),
    ("DATABASE_MAX_CONNECTIONS", "abc", "must be a whole number of at least 0, not 'abc'"),
    ("DATABASE_POOL_TIMEOUT", 0, "must be a number of seconds above 0 and below "
                                 "1,000,000,000, not 0"),
    ("DATABASE_POOL_TIMEOUT", 1e10, "must be a number of seconds above 0 and below "
                                    "1,000,000,000, not 10000000000.0"),
    ("DATABASE_STALE_TIMEOUT", "5m", "must be a whole number of at least 0, not '5m'"),
    ("DATABASE_CONNECT_TIMEOUT", "0", "must be a whole number of at least 1, not 0"),
    ("RATELIMIT_STORAGE_TIMEOUT", "0", "must be a number of seconds above 0 and below "
                                       "1,000,000,000, not 0.0"),
    ("RATELIMIT_STORAGE_TIMEOUT", "half", "must be a number of seconds above 0 and below "
                                          "1,000,000,000, not 'half'"),
    ("DATABASE_PREPARED_STATEMENTS", "flase", "must be one of true, 1, on, yes or false, 0, "
                                              "off, no, not 'flase'"),
    ("RATELIMIT_ENABLED", "", "must be one of true, 1, on, yes or false, 0, off, no, not ''"),
    ("RATELIMIT_ENABLED", 2, "must be one of true, 1, on, yes or false, 0, off, no, not 2"),
])
def test_a_database_or_storage_setting_is_refused_at_start(instance_path, name, value, message):
    with pytest.raises(ConfigError) as refused:
        create_app({"RATELIMIT_ENABLED": False, name: value})
    assert str(refused.value) == f"POTPIE_{name} {message}"


@pytest.mark.parametrize("url", ["mysql://root:secret@db/potpie", "postgresql:/secret",
                                 "sqlite+pysqlite:///secret.db", 5, "sqlite://",
                                 "sqlite:///:memory:", "sqlite://secret/x.db"])
def test_a_database_url_of_no_known_kind_is_refused_without_being_echoed(instance_path, url):
    with pytest.raises(ConfigError) as refused:
        create_app({"RATELIMIT_ENABLED": False, "DATABASE_URL": url})
    assert str(refused.value) == ("DATABASE_URL must be sqlite:///<file> or "
                                  "postgresql://<server>/<database>")


def test_an_instance_folder_that_cannot_be_created_is_refused_at_start(tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("")
    folder = tmp_path / "a-file" / "instance"
    monkeypatch.setenv("POTPIE_INSTANCE_PATH", str(folder))
    with pytest.raises(ConfigError) as refused:
        create_app({"RATELIMIT_ENABLED": False})
    assert str(refused.value) == (f"the instance folder {folder} cannot be created (Not a "
                                  "directory): POTPIE_INSTANCE_PATH names the folder to use")


@pytest.mark.parametrize("name", ["RATELIMIT_HEADERS_ENABLED", "RATELIMIT_ENABLE",
                                  "RATELIMIT_APPLICATION"])
def test_a_rate_limit_setting_the_service_does_not_document_is_refused(instance_path,
                                                                      monkeypatch, name):
    monkeypatch.setenv(f"POTPIE_{name}", "true")
    with pytest.raises(ConfigError) as refused:
        create_app()
    assert str(refused.value) == (
        f"POTPIE_{name} is no setting of this service; its rate limits read "
        "POTPIE_RATELIMIT_ENABLED, POTPIE_RATELIMIT_DEFAULT, POTPIE_RATELIMIT_AUTH_FAILURES, "
        "POTPIE_RATELIMIT_STORAGE_URI, POTPIE_RATELIMIT_KEY_PREFIX, "
        "POTPIE_RATELIMIT_STORAGE_TIMEOUT")


def test_the_config_modules_own_constants_are_no_settings(instance_path, monkeypatch):
    # Loaded as settings, POTPIE__RATE_LIMIT_SETTINGS could have widened the refusal above.
    monkeypatch.setenv("POTPIE_RATELIMIT_HEADERS_ENABLED", "true")
    monkeypatch.setenv("POTPIE__RATE_LIMIT_SETTINGS", '["RATELIMIT_HEADERS_ENABLED"]')
    with pytest.raises(ConfigError, match="POTPIE_RATELIMIT_HEADERS_ENABLED is no setting"):
        create_app()
    monkeypatch.delenv("POTPIE__RATE_LIMIT_SETTINGS")
    monkeypatch.delenv("POTPIE_RATELIMIT_HEADERS_ENABLED")
    assert [name for name in create_app().config if name.startswith("_")] == []


def test_a_rate_limit_storage_scheme_is_read_in_any_case(instance_path):
    app = create_app({"RATELIMIT_STORAGE_URI": "Memory://"})
    assert "potpie_limiter" in app.extensions


@pytest.mark.parametrize("uri,named", [("bogus://", "not a bogus:// URI"),
                                       ("memcached://localhost:11211", "not a memcached:// URI"),
                                       ("localhost:6379", "not a URI"), (1, "not a URI")])
def test_a_rate_limit_storage_of_no_installed_kind_is_refused_at_start(instance_path, uri,
                                                                       named):
    with pytest.raises(ConfigError) as refused:
        create_app({"RATELIMIT_STORAGE_URI": uri})
    assert str(refused.value) == (
        "POTPIE_RATELIMIT_STORAGE_URI must be memory:// or a Redis server's URI (redis://, "
        f"rediss://, redis+unix://, redis+sentinel://, redis+cluster://), {named}")


@pytest.mark.parametrize("on,off", [("True", "False"), (" on ", "OFF"), ("yes", "no"), (1, 0),
                                    (True, False), ("1", "0")])
def test_switches_are_read_in_every_usual_spelling(instance_path, on, off):
    app = create_app({"RATELIMIT_ENABLED": off, "DATABASE_PREPARED_STATEMENTS": on})
    assert (app.config["RATELIMIT_ENABLED"], app.config["DATABASE_PREPARED_STATEMENTS"]) == (
        False, True)
    assert "potpie_limiter" not in app.extensions


def test_a_database_url_scheme_is_read_in_any_case(instance_path):
    url = f"SQLite:///{instance_path / 'upper.sqlite3'}"
    app = create_app({"RATELIMIT_ENABLED": False, "DATABASE_URL": url})
    with app.app_context(), database.connection_context():
        assert database.execute_sql("SELECT 1").fetchone() == (1,)
    assert (instance_path / "upper.sqlite3").exists()


def test_settings_given_as_text_are_read_as_they_are_used(instance_path):
    app = create_app({"RATELIMIT_ENABLED": False, "SQLITE_SYNCHRONOUS": " full",
                      "DATABASE_POOL_TIMEOUT": "0.5", "RATELIMIT_STORAGE_TIMEOUT": "0.25"})
    assert (app.config["SQLITE_SYNCHRONOUS"], app.config["DATABASE_POOL_TIMEOUT"],
            app.config["RATELIMIT_STORAGE_TIMEOUT"]) == ("FULL", 0.5, 0.25)
    with database.connection_context():
        assert database.execute_sql("PRAGMA synchronous").fetchone() == (2,)


def test_settings_layer_defaults_then_instance_config_then_environment(instance_path,
                                                                        monkeypatch):
    """SPEC section 9: package defaults < instance/config.py < POTPIE_* (< test_config)."""
    (instance_path / "config.py").write_text("RETRY_AFTER_SECONDS = 7\nMAX_CONTENT_LENGTH = 2048\n")
    monkeypatch.setenv("POTPIE_RETRY_AFTER_SECONDS", "9")
    app = create_app({"RATELIMIT_ENABLED": False})
    assert (app.config["RETRY_AFTER_SECONDS"], app.config["MAX_CONTENT_LENGTH"],
            app.config["RATELIMIT_DEFAULT"], app.config["DATABASE_URL"]) == (
        9, 2048, "600 per minute", f"sqlite:///{instance_path / 'potpie.sqlite3'}")


def test_settings_given_as_digits_are_read_as_numbers(instance_path):
    app = create_app({"RATELIMIT_ENABLED": False, "MAX_CONTENT_LENGTH": "1024",
                      "RETRY_AFTER_SECONDS": " 7"})
    assert (app.config["MAX_CONTENT_LENGTH"], app.config["RETRY_AFTER_SECONDS"]) == (1024, 7)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x"])
def test_body_that_is_not_json_typed_is_415(api, content_type):
    r = api.post(SAVE, data='{"name": "N", "integration_type": "jira"}',
                 content_type=content_type)
    assert r.status_code == 415
    assert r.get_json() == {"detail": "Content-Type must be application/json"}


@pytest.mark.parametrize("coding", ["gzip", "identity, br"])
def test_a_compressed_body_is_415_naming_the_coding_it_takes(api, coding):
    r = api.post(SAVE, data='{"name": "N", "integration_type": "jira"}',
                 content_type="application/json", headers={"Content-Encoding": coding})
    assert (r.status_code, r.get_json(), r.headers["Accept-Encoding"]) == (
        415, {"detail": "Content-Encoding must be identity"}, "identity")


@pytest.mark.parametrize("content_type,headers", [
    ("application/json; charset=UTF-8", {}), ("application/json; charset=utf8", {}),
    # RFC 8259 defines no charset for JSON: the parameter changes nothing.
    ("application/json; charset=us-ascii", {}), ("application/json; charset=latin-1", {}),
    ("Application/JSON", {"Content-Encoding": "identity"}),
    ("application/json", {"Content-Encoding": "identity, identity"}),
    ("application/json", {"Content-Encoding": ""}),
])
def test_json_said_in_other_words_is_read(api, content_type, headers):
    r = api.post(SAVE, data='{"name": "N", "integration_type": "jira"}',
                 content_type=content_type, headers=headers)
    assert (r.status_code, r.get_json()["data"]["name"]) == (200, "N")


def test_unknown_route_and_method_answer_json_with_or_without_a_key(client, api):
    for response in (client.get("/api/v2/nope"), api.get("/api/v2/nope")):
        assert response.status_code == 404
        assert response.get_json() == {"detail": "Not Found"}
    for response in (client.post("/api/v2/integrations"), api.post("/api/v2/integrations")):
        assert response.status_code == 405
        assert response.get_json() == {"detail": "Method Not Allowed"}
        assert sorted(response.headers["Allow"].split(", ")) == ["GET", "HEAD"]


@pytest.mark.parametrize("method", ["GET", "PATCH", "PUT", "DELETE", "FOO"])
def test_the_save_route_allows_post_alone_and_is_no_integration_id(api, method):
    response = api.open(SAVE, method=method, json={"status": "inactive"})
    assert (response.status_code, response.get_json()) == (405, {"detail": "Method Not Allowed"})
    assert response.headers["Allow"] == "POST"
    # Other ids that are no UUID are still the envelope's 404, and so is `save` as the id
    # of the audit trail or the template.
    for path in (SAVE + "d", SAVE[:-len("save")] + "SAVE", SAVE + "/audit", SAVE + "/template"):
        response = api.get(path)
        assert (response.status_code, response.get_json()["error"]) == (
            404, "Integration not found")


def test_a_doubled_slash_names_no_route_with_or_without_a_key(client, api):
    for response in (client.get("/api/v2//integrations"), api.get("/api/v2//integrations"),
                     api.post("/api/v2//integrations/save", json=VALID),
                     api.delete("/api/v2/integrations//00000000-0000-4000-8000-000000000000")):
        assert (response.status_code, response.get_json()) == (404, {"detail": "Not Found"})
        assert "Location" not in response.headers


def test_options_is_a_method_no_route_allows_with_or_without_a_key(client, api):
    for response in (client.options("/api/v2/integrations"), api.options("/api/v2/integrations"),
                     client.options("/healthz")):
        assert response.status_code == 405
        assert response.get_json() == {"detail": "Method Not Allowed"}
        assert "OPTIONS" not in response.headers["Allow"]
    for method in ("get", "options"):  # the service serves no static files
        response = getattr(client, method)("/static/anything.js")
        assert (response.status_code, response.get_json()) == (404, {"detail": "Not Found"})


def test_a_validator_given_to_a_field_still_runs():
    # The fields skip marshmallow's validator chain when they have no validators.
    field = Text(validate=validate.OneOf(["a"]))
    assert field.deserialize("a") == "a"
    with pytest.raises(ValidationError) as raised:
        field.deserialize("b")
    assert raised.value.messages == ["Must be one of: a."]


def test_options_the_schemas_do_not_use_still_load_as_marshmallow_loads_them():
    # StrictSchema's own field loop assumes fields named as their keys, loaded whole;
    # anything else goes to marshmallow's loop.
    class Renamed(StrictSchema):
        given = Text(data_key="givenName", required=True)
        kept = Text(attribute="stored")

    schema = Renamed()
    assert schema.load({"givenName": "a", "kept": "b"}) == {"given": "a", "stored": "b"}
    with pytest.raises(ValidationError) as raised:
        schema.load({"given": "a"})
    assert raised.value.messages == {"givenName": ["field required"],
                                     "given": ["extra fields not permitted"]}
    assert Renamed(partial=True).load({}) == {}
    assert ScopeDataSchema(many=True).load([{"org_slug": "x"}]) == [{"org_slug": "x"}]


def test_an_absent_field_is_left_out_defaulted_or_required_as_marshmallow_has_it():
    # StrictSchema's loop skips absent fields that are neither required nor defaulted.
    class Absent(StrictSchema):
        optional = Text(allow_none=True)
        defaulted = Text(load_default="d")
        required = Text(required=True)

    assert Absent().load({"required": "r"}) == {"defaulted": "d", "required": "r"}
    assert Absent().load({"required": "r", "optional": None}) == {
        "optional": None, "defaulted": "d", "required": "r"}
    with pytest.raises(ValidationError) as raised:
        Absent().load({})
    assert raised.value.messages == {"required": ["field required"]}


EXTRA_QUERY = {"loc": ["query", "dry_run"], "msg": "extra fields not permitted",
               "type": "value_error.extra"}


@pytest.mark.parametrize("method,suffix,body", [
    ("patch", "", {"status": "error"}), ("put", "", {"status": "error"}),
    ("delete", "", None), ("get", "", None), ("get", "/template", None),
])
def test_a_route_that_reads_no_query_refuses_one_and_changes_nothing(api, method, suffix, body):
    saved = api.save(VALID).get_json()["data"]
    path = f"/api/v2/integrations/{saved['integration_id']}"
    kwargs = {} if body is None else {"json": body}
    r = getattr(api, method)(path + suffix + "?dry_run=true", **kwargs)
    assert (r.status_code, r.get_json()) == (422, {"detail": [EXTRA_QUERY]})
    assert api.get(path).get_json()["data"] == saved
    assert len(api.get(path + "/audit").get_json()["data"]) == 1
    # A bare "?" or an empty parameter list is no parameter (a deletion, once).
    for query in ("?&", "?")[method == "delete":]:
        assert getattr(api, method)(path + suffix + query, **kwargs).status_code == (
            204 if method == "delete" else 200)


def test_a_save_with_a_query_writes_nothing_and_lists_the_body_problems_too(api):
    r = api.post(SAVE + "?dry_run=1", json=VALID)
    assert (r.status_code, r.get_json()) == (422, {"detail": [EXTRA_QUERY]})
    r = api.post(SAVE + "?dry_run=1", json={**VALID, "status": "on"})
    assert r.status_code == 422
    assert [p["loc"] for p in r.get_json()["detail"]] == [["query", "dry_run"],
                                                           ["body", "status"]]
    assert api.get("/api/v2/integrations").get_json()["pagination"]["total"] == 0


@pytest.mark.parametrize("raw", ["{", b'{"name": "\xff"}', '\ufeff{}'])
def test_a_body_that_does_not_decode_is_listed_with_the_query_problems(api, raw):
    r = api.post(SAVE + "?dry_run=1", data=raw, content_type="application/json")
    assert r.status_code == 422
    detail = r.get_json()["detail"]
    assert detail[0] == EXTRA_QUERY
    assert [p["type"] for p in detail] == ["value_error.extra", "value_error.jsondecode"]
