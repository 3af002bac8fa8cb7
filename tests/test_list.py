"""GET /api/v2/integrations: filters, pagination, ordering, query validation (SPEC section 6)."""
import datetime as dt

import pytest

from potpie_flask import representation
from potpie_flask.models import Integration

from .helpers import LIST, create, problem, statements_sent


def _names(response):
    return [item["name"] for item in response.get_json()["data"]]


def test_empty_list_has_the_envelope_and_default_pagination(api):
    r = api.get(LIST)
    assert r.status_code == 200
    assert r.get_json() == {"success": True, "data": [], "error": None,
                            "pagination": {"limit": 50, "offset": 0, "total": 0}}


def test_list_returns_full_objects_newest_first(api):
    first = create(api, name="A", integration_type="jira")
    second = create(api, name="B", integration_type="slack")
    r = api.get(LIST)
    assert r.status_code == 200
    assert r.get_json() == {"success": True, "data": [second, first], "error": None,
                            "pagination": {"limit": 50, "offset": 0, "total": 2}}


def test_a_listed_integration_with_every_field_set_is_its_save_and_read_answer(api):
    saved = create(api, name="Full", integration_type="sentry", status="pending", active=False,
                   unique_identifier="full-1",
                   scope_data={"org_slug": "acme", "installation_id": "i1", "workspace_id": "w1",
                               "project_id": "p1"},
                   metadata={"instance_name": "prod", "created_via": "api", "version": "2",
                             "description": "all set", "tags": ["a", "b"]},
                   auth_data={"access_token": "t", "token_type": "Bearer", "scope": "read",
                              "expires_at": "2030-01-01T10:00:00.123456Z"})
    bare = create(api, name="Bare", integration_type="jira",
                  auth_data={"access_token": "t", "expires_at": "2031-06-01T00:00:00Z"})
    assert saved["auth_data"]["expires_at"] == "2030-01-01T10:00:00.123456Z"
    assert bare["auth_data"]["expires_at"] == "2031-06-01T00:00:00.000000Z"
    listed = api.get(LIST).get_json()["data"]
    assert listed == [bare, saved]
    # 1 == True in Python: the booleans' JSON type is asserted on its own.
    assert [(item["active"], item["has_auth_data"]) for item in listed] == [(True, True),
                                                                            (False, True)]
    assert all(type(item["active"]) is bool and type(item["has_auth_data"]) is bool
               for item in listed)
    for answer in (saved, bare):
        assert api.get(f"{LIST}/{answer['integration_id']}").get_json()["data"] == answer


@pytest.mark.parametrize("value, shown", [
    (dt.datetime(2026, 1, 2, 3, 4, 5, 6), "2026-01-02T03:04:05.000006Z"),
    (dt.datetime(2026, 1, 2, 3, 4, 5), "2026-01-02T03:04:05.000000Z"),
    ("2026-01-02 03:04:05.000006", "2026-01-02T03:04:05.000006Z"),
    ("2026-01-02 03:04:05", "2026-01-02T03:04:05.000000Z"),
    ("2026-01-02T03:04:05.5", "2026-01-02T03:04:05.500000Z"),
    (None, None),
])
def test_a_timestamp_reads_the_same_from_a_datetime_or_sqlite_text(value, shown):
    assert representation.timestamp(value) == shown


def test_equal_created_at_is_ordered_by_integration_id(api, app):
    ids = [create(api, name=f"N{i}", integration_type="jira")["integration_id"]
           for i in range(4)]
    with app.app_context():
        Integration.update(created_at=dt.datetime(2025, 1, 15, 10, 30)).execute()
    data = api.get(LIST).get_json()["data"]
    assert [item["integration_id"] for item in data] == sorted(ids)
    assert {item["created_at"] for item in data} == {"2025-01-15T10:30:00.000000Z"}


def test_filters_combine(api):
    create(api, name="S1", integration_type="sentry", scope_data={"org_slug": "acme"})
    create(api, name="S2", integration_type="sentry", status="error", active=False,
           scope_data={"org_slug": "acme"})
    create(api, name="S3", integration_type="sentry", scope_data={"org_slug": "other"})
    create(api, name="J1", integration_type="jira", scope_data={"org_slug": "acme"})
    assert _names(api.get(LIST + "?integration_type=sentry")) == ["S3", "S2", "S1"]
    assert _names(api.get(LIST + "?status=error")) == ["S2"]
    assert _names(api.get(LIST + "?active=false")) == ["S2"]
    assert _names(api.get(LIST + "?active=true")) == ["J1", "S3", "S1"]
    assert _names(api.get(LIST + "?org_slug=acme")) == ["J1", "S2", "S1"]
    r = api.get(LIST + "?integration_type=sentry&org_slug=acme&active=true")
    assert _names(r) == ["S1"]
    assert r.get_json()["pagination"] == {"limit": 50, "offset": 0, "total": 1}
    assert _names(api.get(LIST + "?integration_type=github")) == []


def test_limit_and_offset_page_through_with_the_total(api):
    for i in range(5):
        create(api, name=f"I{i}", integration_type="linear")
    r = api.get(LIST + "?limit=2&offset=1")
    assert r.status_code == 200
    assert _names(r) == ["I3", "I2"]
    assert r.get_json()["pagination"] == {"limit": 2, "offset": 1, "total": 5}
    r = api.get(LIST + "?limit=2&offset=4")
    assert _names(r) == ["I0"]
    r = api.get(LIST + "?offset=10")
    assert r.get_json() == {"success": True, "data": [], "error": None,
                            "pagination": {"limit": 50, "offset": 10, "total": 5}}
    assert api.get(LIST + "?limit=200").get_json()["pagination"]["limit"] == 200
    r = api.get(LIST + "?offset=9223372036854775807")
    assert r.get_json() == {"success": True, "data": [], "error": None,
                            "pagination": {"limit": 50, "offset": 9223372036854775807,
                                           "total": 5}}


def test_a_page_is_read_with_its_total_in_one_statement(api, other_api, monkeypatch):
    for i in range(3):
        create(api, name=f"I{i}", integration_type="linear")
    # Rows the total must leave out: another status, another owner.
    create(api, name="Paused", integration_type="linear", status="inactive")
    create(other_api, name="I9", integration_type="linear")
    sent = statements_sent(monkeypatch)
    r = api.get(LIST + "?limit=2&status=active")
    assert (_names(r), r.get_json()["pagination"]["total"]) == (["I2", "I1"], 3)
    assert len(sent) == 2  # the key lookup, then the page with its total
    del sent[:]
    # A page past the end has no row to carry the total: it is counted on its own.
    r = api.get(LIST + "?offset=3&status=active")
    assert (_names(r), r.get_json()["pagination"]["total"]) == ([], 3)
    assert len(sent) == 3


@pytest.mark.parametrize("query, problems", [
    ("foo=1", [problem(["query", "foo"], "extra fields not permitted", "value_error.extra")]),
    ("limit=0", [problem(["query", "limit"], "ensure this value is greater than or equal to 1",
                         "value_error.number.not_ge", limit_value=1)]),
    ("limit=201", [problem(["query", "limit"], "ensure this value is less than or equal to 200",
                           "value_error.number.not_le", limit_value=200)]),
    ("limit=ten", [problem(["query", "limit"], "value is not a valid integer",
                           "type_error.integer")]),
    ("limit=1.5", [problem(["query", "limit"], "value is not a valid integer",
                           "type_error.integer")]),
    ("offset=-1", [problem(["query", "offset"], "ensure this value is greater than or equal to 0",
                           "value_error.number.not_ge", limit_value=0)]),
    # Past the largest OFFSET the databases take (a 64-bit signed integer).
    ("offset=9223372036854775808", [problem(
        ["query", "offset"], "ensure this value is less than or equal to 9223372036854775807",
        "value_error.number.not_le", limit_value=9223372036854775807)]),
    ("active=yes", [problem(["query", "active"], "value could not be parsed to a boolean",
                            "type_error.bool")]),
    ("status=Active", [problem(
        ["query", "status"],
        "value is not a valid enumeration member; permitted: "
        "'active', 'inactive', 'pending', 'error'",
        "type_error.enum", enum_values=["active", "inactive", "pending", "error"])]),
    ("integration_type=gitlab", [problem(
        ["query", "integration_type"],
        "value is not a valid enumeration member; permitted: "
        "'sentry', 'jira', 'linear', 'confluence', 'slack', 'github'",
        "type_error.enum",
        enum_values=["sentry", "jira", "linear", "confluence", "slack", "github"])]),
    ("org_slug=" + "x" * 256, [problem(["query", "org_slug"],
                                       "ensure this value has at most 255 characters",
                                       "value_error.any_str.max_length", limit_value=255)]),
])
def test_bad_query_is_422_with_exact_problems(api, query, problems):
    r = api.get(f"{LIST}?{query}")
    assert r.status_code == 422
    assert r.get_json() == {"detail": problems}


def test_every_query_problem_is_listed(api):
    r = api.get(LIST + "?limit=0&offset=-1&page=2")
    assert r.status_code == 422
    assert sorted(r.get_json()["detail"], key=lambda p: p["loc"]) == [
        problem(["query", "limit"], "ensure this value is greater than or equal to 1",
                "value_error.number.not_ge", limit_value=1),
        problem(["query", "offset"], "ensure this value is greater than or equal to 0",
                "value_error.number.not_ge", limit_value=0),
        problem(["query", "page"], "extra fields not permitted", "value_error.extra"),
    ]


def test_list_needs_a_key(client):
    r = client.get(LIST)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == "ApiKey"
    assert r.get_json() == {"detail": "API key is required"}


def test_a_stored_row_no_representation_can_read_answers_500_with_each_routes_verb(api, app):
    # Tags are written only as JSON lists: text edited by hand, say, is what nobody expects.
    saved = create(api, name="Damaged", integration_type="jira")
    with app.app_context():
        Integration.update(tags="not json").where(
            Integration.id == saved["integration_id"]).execute()
    one = f"/api/v2/integrations/{saved['integration_id']}"
    for path, verb in ((LIST, "list"), (one, "read"), (one + "/template", "read")):
        r = api.get(path)
        assert (r.status_code, r.get_json()) == (500, {
            "success": False, "data": None,
            "error": f"Failed to {verb} integration: Internal server error"}), path
    # The audit trail reads no tags: it is still there to show what happened.
    assert api.get(one + "/audit").status_code == 200
