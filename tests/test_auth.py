"""x-api-key authentication (SPEC section 2) and the keys CLI (section 8)."""
import hashlib
import re

import pytest

from potpie_flask.models import ApiKey

from .helpers import LIST, TIMESTAMP

REQUIRED = {"detail": "API key is required"}
INVALID = {"detail": "Invalid API key"}


@pytest.mark.parametrize("headers", [{}, {"x-api-key": ""}, {"x-api-key": "   "}],
                         ids=["missing", "empty", "whitespace"])
def test_missing_key_is_401_required(client, headers):
    r = client.get(LIST, headers=headers)
    assert r.status_code == 401
    assert r.get_json() == REQUIRED
    assert r.headers["WWW-Authenticate"] == "ApiKey"


@pytest.mark.parametrize("key", [
    "sk-" + "0" * 64,               # well-formed, unknown
    "sk-" + "A" * 64,               # uppercase hex
    "sk-short",                     # malformed
    "Bearer sk-" + "0" * 64,        # wrong scheme
])
def test_unknown_or_malformed_key_is_401_invalid(client, key):
    r = client.get(LIST, headers={"x-api-key": key})
    assert r.status_code == 401
    assert r.get_json() == INVALID
    assert r.headers["WWW-Authenticate"] == "ApiKey"


@pytest.mark.parametrize("around", ["\x1f", "\x1c", "\x85", "\xa0", "\x0b"])
def test_a_key_with_other_than_spaces_and_tabs_around_it_is_invalid(client, api_key, around):
    for key in (around + api_key, api_key + around):
        r = client.get(LIST, headers={"x-api-key": key})
        assert (r.status_code, r.get_json()) == (401, INVALID)
    r = client.get(LIST, headers={"x-api-key": f" \t{api_key}\t "})
    assert r.status_code == 200


def test_key_in_query_string_is_not_accepted(client, api_key):
    r = client.get(f"{LIST}?x-api-key={api_key}")
    assert r.status_code == 401
    assert r.get_json() == REQUIRED


def test_valid_key_acts_for_its_owner(api):
    r = api.get(LIST)
    assert r.status_code == 200
    assert r.get_json() == {"success": True, "data": [], "error": None,
                            "pagination": {"limit": 50, "offset": 0, "total": 0}}


def test_only_the_hash_of_a_key_is_stored(app, api_key):
    with app.app_context():
        row = ApiKey.get()
        assert row.key_hash == hashlib.sha256(api_key.encode()).hexdigest()  # SPEC section 2
        assert row.prefix == api_key[:7]
        stored = [str(v) for v in ApiKey.select().tuples().get()]
        assert not any(api_key in value or api_key[7:] in value for value in stored)


def test_keys_cli_create_list_revoke(runner, client):
    created = runner.invoke(args=["keys", "create", "--user-id", "user_cli",
                                  "--email", "a@b.c", "--label", "laptop"])
    assert created.exit_code == 0, created.output
    key = created.output.strip().splitlines()[-1]
    assert re.fullmatch(r"sk-[0-9a-f]{64}", key)
    assert client.get(LIST, headers={"x-api-key": key}).status_code == 200

    # Stripped, as `keys create` strips it.
    listed = runner.invoke(args=["keys", "list", "--user-id", " user_cli "])
    assert listed.exit_code == 0
    lines = listed.output.strip().splitlines()
    assert lines[0] == "id\tuser_id\tlabel\tprefix\tcreated_at\trevoked_at"
    key_id, user, label, prefix, created_at, revoked = lines[1].split("\t")
    assert (user, label, prefix, revoked) == ("user_cli", "laptop", key[:7], "-")
    assert key[7:] not in listed.output

    revoked = runner.invoke(args=["keys", "revoke", key_id])
    assert revoked.exit_code == 0
    assert revoked.output == f"revoked key {key_id}\n"
    r = client.get(LIST, headers={"x-api-key": key})
    assert r.status_code == 401
    assert r.get_json() == INVALID
    assert TIMESTAMP.fullmatch(
        runner.invoke(args=["keys", "list"]).output.strip().splitlines()[1].split("\t")[5])


def create_cli_key(runner, user_id, label):
    created = runner.invoke(args=["keys", "create", "--user-id", user_id, "--label", label])
    assert created.exit_code == 0, created.output
    return created.output.strip().splitlines()[-1]


def listed_keys(runner, *options):
    listed = runner.invoke(args=["keys", "list", *options])
    assert listed.exit_code == 0, listed.output
    return [line.split("\t") for line in listed.output.strip().splitlines()[1:]]


def test_keys_list_with_a_user_id_lists_that_users_keys_alone(runner):
    mine = create_cli_key(runner, "user_a", "one")
    create_cli_key(runner, "user_b", "other")
    assert [(user, label, prefix) for _, user, label, prefix, _, _ in
            listed_keys(runner, "--user-id", "user_a")] == [("user_a", "one", mine[:7])]
    assert sorted(user for _, user, *_ in listed_keys(runner)) == ["user_a", "user_b"]


def test_revoking_one_of_a_users_keys_leaves_the_others_working(runner, client):
    # SPEC section 2: several keys per user, for rotation.
    old = create_cli_key(runner, "user_rot", "old")
    new = create_cli_key(runner, "user_rot", "new")
    old_id = next(key_id for key_id, _, label, *_ in listed_keys(runner, "--user-id", "user_rot")
                  if label == "old")
    assert runner.invoke(args=["keys", "revoke", old_id]).exit_code == 0
    assert client.get(LIST, headers={"x-api-key": old}).status_code == 401
    r = client.get(LIST, headers={"x-api-key": new})
    assert (r.status_code, r.get_json()["success"]) == (200, True)
    assert [(label, revoked == "-") for _, _, label, _, _, revoked in
            listed_keys(runner, "--user-id", "user_rot")] == [("old", False), ("new", True)]


def test_revoking_an_unknown_key_fails_clearly(runner):
    result = runner.invoke(args=["keys", "revoke", "999"])
    assert result.exit_code != 0
    assert "no key with id 999" in result.output


@pytest.mark.parametrize("key_id", ["0", "99999999999999999999"])
def test_revoking_an_id_no_key_can_have_fails_clearly(runner, key_id):
    result = runner.invoke(args=["keys", "revoke", key_id])
    assert result.exit_code == 1
    assert result.output == f"Error: no key with id {key_id}\n"


@pytest.mark.parametrize("options,problem", [
    (["--user-id", "   "],
     "Invalid value for '--user-id': ensure this value has at least 1 characters"),
    (["--user-id", "u" * 256],
     "Invalid value for '--user-id': ensure this value has at most 255 characters"),
    (["--user-id", "u", "--email", "e" * 300],
     "Invalid value for '--email': ensure this value has at most 255 characters"),
    (["--user-id", "u", "--label", "l" * 256],
     "Invalid value for '--label': ensure this value has at most 255 characters"),
    (["--user-id", "u\x1b[31m"],
     "Invalid value for '--user-id': must not contain control characters"),
    # Python's strip() would have dropped it as whitespace.
    (["--user-id", "u\x1f"],
     "Invalid value for '--user-id': must not contain control characters"),
])
def test_keys_create_refuses_what_a_key_cannot_hold(runner, app, options, problem):
    result = runner.invoke(args=["keys", "create", *options])
    assert result.exit_code == 2
    assert result.output.endswith(f"Error: {problem}\n")
    with app.app_context():
        assert ApiKey.select().count() == 0


def test_keys_create_stores_its_options_stripped(runner, app):
    result = runner.invoke(args=["keys", "create", "--user-id", " user_cli ", "--email",
                                 "\ta@example.com\r\n", "--label", " ci "])
    assert result.exit_code == 0
    with app.app_context():
        row = ApiKey.get()
    assert (row.user_id, row.email, row.label) == ("user_cli", "a@example.com", "ci")


def test_a_user_may_hold_several_keys(runner, client):
    keys = [runner.invoke(args=["keys", "create", "--user-id", "u"]).output.split()[-1]
            for _ in range(2)]
    assert keys[0] != keys[1]
    assert all(client.get(LIST, headers={"x-api-key": k}).status_code == 200 for k in keys)
