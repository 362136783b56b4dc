"""register.py for every token (issue 7): the Drains API, the endpoint verification code, and the
`list` and `remove` commands; run as a subprocess against the fake Vercel API."""

from __future__ import annotations

import gzip
import json
import stat
from pathlib import Path

import httpx
import pytest

from receiver.secret_file import read_secrets
from tests.fake_vercel import (
    INTEGRATION_CREATE_SCHEMA,
    INTEGRATION_TOKEN,
    PERSONAL_TOKEN,
    SDK_VERSION,
    TEAM_ID,
    TEAM_SLUG,
    FakeVercel,
    Run,
    drains_body_errors,
    run_register,
    schema_errors,
    sdk_errors,
)
from tests.support import running_receiver, sign

URL = "https://logs.example.org/"
ELSEWHERE = "https://elsewhere.example.org/"
LIST = "GET /v1/drains"
VERIFY = "GET /v1/verify-endpoint"
CREATE = "POST /v1/drains"


def register(
    api: FakeVercel, secret_file: Path, *args: str, token: str = PERSONAL_TOKEN,
    drains: bool = True, **env: str,
) -> Run:
    """register.py against the fake; `--api drains` unless `drains` is False."""
    argv = list(args)
    if "--url" not in argv:
        argv += ["--url", URL]
    if "--api" not in argv and "DRAIN_API" not in env:
        argv += ["--api", "drains" if drains else "integration"]
    run = run_register(argv, home=secret_file.parent.parent / "home", env={
        "VERCEL_API_URL": api.url, "VERCEL_TOKEN": token, "DRAIN_SECRET_FILE": str(secret_file),
        **env,
    })
    return run.checked(api)


def created_body(api: FakeVercel) -> dict:
    (create,) = api.sent("POST")
    return create.json()



# --- The fake's own checks: a body register.py must never send is refused ----------------------


def test_the_fake_refuses_bodies_outside_the_schemas() -> None:
    good = {"name": "n", "projects": "all", "schemas": {"log": {"version": "v1"}},
            "delivery": {"type": "http", "endpoint": URL, "encoding": "ndjson", "headers": {}}}
    assert drains_body_errors(good) == []
    # Bodies the SDK accepts, so the fake must too (issue 11 item 7).
    for accepted in [
        {k: v for k, v in good.items() if k != "delivery"},
        {**good, "schemas": {"speed_insights": {"version": "v1"}}},
        {**good, "sampling": [{"type": "head_sampling", "rate": 0.5, "env": "production"}]},
        {**good, "source": {"kind": "self-served"}, "transforms": [{"id": "t1"}]},
        {**good, "filter": {"version": "v2", "filter": {"type": "odata",
                                                        "text": "level eq 'error'"}}},
    ]:
        assert drains_body_errors(accepted) == [], accepted
    for broken in [
        {**good, "projects": "some"},
        {**good, "delivery": {**good["delivery"], "encoding": "csv"}},
        {**good, "delivery": {**good["delivery"], "compression": "br"}},
        {**good, "filter": {"version": "v2", "filter": {"type": "basic",
                                                        "log": {"sources": ["cdn"]}}}},
        {**good, "extra": 1},
    ]:
        assert drains_body_errors(broken), broken
    seed_ok = {"name": "a b_c-1", "url": URL, "secret": "s" * 40, "sources": ["build"]}
    assert schema_errors(INTEGRATION_CREATE_SCHEMA, seed_ok) == []
    for broken in [{"name": "x"}, {**seed_ok, "name": "a/b"}, {**seed_ok, "name": "n" * 101},
                   {**seed_ok, "url": "ftp://x"}, {**seed_ok, "sources": ["redirect"]},
                   {**seed_ok, "deliveryFormat": "protobuf"}, {**seed_ok, "projectIds": ["a-b"]}]:
        assert schema_errors(INTEGRATION_CREATE_SCHEMA, broken), broken


# --- 1. --api drains -----------------------------------------------------------------------------


def test_drains_api_body_has_the_documented_shape(api: FakeVercel, secret_file: Path) -> None:
    run = register(api, secret_file)
    assert run.returncode == 0, run.stderr
    assert api.calls() == [LIST, VERIFY, CREATE]
    assert api.validation_errors == []
    body = created_body(api)
    secret = body["delivery"].pop("secret")
    assert body == {
        "name": "vercel-drain-receiver",
        "projects": "all",
        "schemas": {"log": {"version": "v1"}},
        "delivery": {"type": "http", "endpoint": URL, "encoding": "ndjson",
                     "compression": "gzip", "headers": {}},
    }
    assert read_secrets(secret_file) == [secret]
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    (drain,) = api.drains
    for shown in [drain["id"], "vercel-drain-receiver", URL, "ndjson", "gzip", "sources:      all"]:
        assert shown in run.stdout


def test_drains_api_filters_projects_and_options(api: FakeVercel, secret_file: Path) -> None:
    run = register(
        api, secret_file, "--source", "lambda", "--source", "redirect", "--environment",
        "production", "--environment", "preview", "--project-id", "prj_a1", "--format", "json",
        "--compression", "none", "--header", "X-Env: prod", "--name", "edge logs",
        "--team-id", TEAM_ID)
    assert run.returncode == 0, run.stderr
    assert api.validation_errors == []
    body = created_body(api)
    body["delivery"].pop("secret")
    assert body == {
        "name": "edge logs",
        "projects": "some",
        "projectIds": ["prj_a1"],
        "schemas": {"log": {"version": "v1"}},
        "delivery": {"type": "http", "endpoint": URL, "encoding": "json",
                     "compression": "none", "headers": {"X-Env": "prod"}},
        "filter": {"version": "v2", "filter": {
            "type": "basic", "log": {"sources": ["lambda", "redirect"]},
            "deployment": {"environments": ["production", "preview"]}}},
    }
    assert {r.query["teamId"] for r in api.requests} == {TEAM_ID}
    assert "lambda, redirect" in run.stdout and "production, preview" in run.stdout


def test_drain_api_is_chosen_by_its_variable(api: FakeVercel, secret_file: Path) -> None:
    run = register(api, secret_file, drains=False, DRAIN_API="drains", DRAIN_COMPRESSION="none",
                   VERCEL_TEAM_SLUG=TEAM_SLUG)
    assert run.returncode == 0, run.stderr
    assert api.calls() == [LIST, VERIFY, CREATE]
    assert created_body(api)["delivery"]["compression"] == "none"
    assert {r.query["slug"] for r in api.requests} == {TEAM_SLUG}


@pytest.mark.parametrize(
    ("args", "named", "allowed"),
    [
        (["--compression", "brotli"], "--compression", "gzip, none"),
        (["--source", "cdn"], "--source", "redirect"),
        (["--environment", "dev"], "--environment", "preview, production"),
        (["--name", "semi;colon"], "--name", None),
        (["--project-id", "prj.1"], "--project-id", None),
    ],
)
def test_drains_api_inputs_are_checked_before_any_request(
    api: FakeVercel, secret_file: Path, args: list[str], named: str, allowed: str | None
) -> None:
    run = register(api, secret_file, *args)
    assert run.returncode == 2
    line = run.one_error_line()
    assert named in line and (allowed is None or allowed in line)
    assert api.requests == []


def test_json_output_removes_the_echoed_secret(api: FakeVercel, secret_file: Path) -> None:
    run = register(api, secret_file, "--json")
    assert run.returncode == 0, run.stderr
    printed = json.loads(run.stdout)
    assert printed["id"] == api.drains[0]["id"]
    assert printed["delivery"]["endpoint"] == URL
    assert "secret" not in printed["delivery"] and "secret" not in run.stdout


def test_dry_run_masks_the_secret_in_the_delivery(api: FakeVercel, secret_file: Path) -> None:
    run = register(api, secret_file, "--dry-run")
    assert run.returncode == 0, run.stderr
    assert api.calls() == [LIST]
    assert f"POST {api.url}/v1/drains" in run.stdout and '"secret": "***"' in run.stdout
    assert not secret_file.exists()


def test_existing_drain_is_kept_and_replace_rotates_it(api: FakeVercel, secret_file: Path) -> None:
    old_secret = "old-drain-secret-0123456789abcdefghijklmn"
    old = api.add_drain(URL, secret=old_secret)
    api.add_drain(ELSEWHERE)
    secret_file.parent.mkdir(parents=True)
    secret_file.write_text(old_secret + "\n")

    kept = register(api, secret_file)
    assert kept.returncode == 0 and old in kept.stdout and "--replace" in kept.stdout
    assert api.calls() == [LIST]

    api.requests.clear()
    rotated = register(api, secret_file, "--replace")
    assert rotated.returncode == 0, rotated.stderr
    assert api.calls() == [LIST, VERIFY, CREATE, f"DELETE /v1/drains/{old}"]
    new_secret = created_body(api)["delivery"]["secret"]
    assert read_secrets(secret_file) == [new_secret, old_secret]
    assert [d["delivery"]["endpoint"] for d in api.drains] == [ELSEWHERE, URL]


def test_drains_api_retries_429_and_5xx(api: FakeVercel, secret_file: Path) -> None:
    api.fail("GET", "/v1/drains", status=429, headers={"Retry-After": "0"})
    api.fail("POST", "/v1/drains", status=500, headers={"Retry-After": "0"})
    run = register(api, secret_file)
    assert run.returncode == 0, run.stderr
    assert api.calls() == [LIST, LIST, VERIFY, CREATE, CREATE]
    assert "answered 429" in run.stderr and "answered 500" in run.stderr


@pytest.mark.parametrize(
    ("status", "expected"),
    [(400, ["400", "invalid projectIds", "options"]), (401, ["401", "VERCEL_TOKEN"]),
     (403, ["403", "team"]), (404, ["404", "--api-url"])],
)
def test_drains_api_errors_are_explained(
    api: FakeVercel, secret_file: Path, status: int, expected: list[str]
) -> None:
    api.fail("POST", "/v1/drains", status=status,
             body={"error": {"code": "bad_request", "message": "invalid projectIds"}})
    run = register(api, secret_file)
    assert run.returncode == 1
    line = run.one_error_line()
    assert all(text in line for text in expected)
    assert "rerun with --api drains" not in line  # that advice is for the integration API
    assert read_secrets(secret_file) == []


# --- 2. the integration API's 400 points at --api drains -------------------------------------------------


def test_personal_token_on_the_integration_api_is_told_to_use_drains(
    api: FakeVercel, secret_file: Path
) -> None:
    run = register(api, secret_file, drains=False)
    assert run.returncode == 1
    line = run.one_error_line()
    assert "not" in line and "integration" in line and "rerun with --api drains" in line
    api.reset()
    again = register(api, secret_file)
    assert again.returncode == 0, again.stderr
    assert read_secrets(secret_file) == [created_body(api)["delivery"]["secret"]]


# --- 3. endpoint verification code ----------------------------------------------------------------


def test_verification_code_is_fetched_first_and_stored_beside_the_secret(
    api: FakeVercel, secret_file: Path
) -> None:
    api.verification_code = "vc-0123456789"
    run = register(api, secret_file, "--team-id", TEAM_ID)
    assert run.returncode == 0, run.stderr
    verify = api.sent("GET", "/v1/verify-endpoint")
    assert len(verify) == 1 and verify[0].query == {"teamId": TEAM_ID}
    assert api.calls().index(VERIFY) < api.calls().index(CREATE)
    verify_file = secret_file.with_name("drain-verify")
    assert verify_file.read_text() == "vc-0123456789\n"
    assert stat.S_IMODE(verify_file.stat().st_mode) == 0o600
    assert str(verify_file) in run.stdout


def test_verification_code_goes_where_the_variable_or_flag_says(
    api: FakeVercel, secret_file: Path, tmp_path: Path
) -> None:
    by_env = tmp_path / "env" / "verify"
    assert register(api, secret_file, DRAIN_VERIFY_FILE=str(by_env)).returncode == 0
    assert by_env.read_text() == "verify-code-first\n"
    api.reset()
    api.verification_code = "second"
    by_flag = tmp_path / "flag" / "verify"
    run = register(api, secret_file, "--replace", "--verify-file", str(by_flag),
                   DRAIN_VERIFY_FILE=str(by_env))
    assert run.returncode == 0
    assert by_flag.read_text() == "second\n" and by_env.read_text() == "verify-code-first\n"


@pytest.mark.parametrize(
    "how",
    [{"status": 403}, {"status": 404}, {"status": 500, "headers": {"Retry-After": "0"}, "times": 4},
     {"action": "drop"}, {"action": "invalid-json"}, {"status": 200, "body": {"code": 1}}],
)
def test_without_a_verification_code_it_says_so_and_goes_on(
    api: FakeVercel, secret_file: Path, how: dict
) -> None:
    api.fail("GET", "/v1/verify-endpoint", **{"times": 1, **how})
    run = register(api, secret_file)
    assert run.returncode == 0, run.stderr
    assert "could not fetch the endpoint verification code, going on" in run.stderr
    assert not secret_file.with_name("drain-verify").exists()
    assert len(api.drains) == 1


def test_unwritable_verify_file_stops_before_creating(
    api: FakeVercel, secret_file: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    run = register(api, secret_file, "--verify-file", str(blocker / "verify"))
    assert run.returncode == 2
    assert "--verify-file" in run.one_error_line()
    assert api.sent("POST") == [] and read_secrets(secret_file) == []


# --- 4. list and remove -------------------------------------------------------------------------


@pytest.mark.parametrize("drains", [True, False])
def test_list_shows_every_drain_and_marks_this_receivers(
    api: FakeVercel, secret_file: Path, drains: bool
) -> None:
    add = api.add_drain if drains else api.add_integration_drain
    mine = [add(URL, name="first"), add("https://LOGS.example.org", name="second")]
    other = add(ELSEWHERE, name="other")
    token = PERSONAL_TOKEN if drains else INTEGRATION_TOKEN
    run = register(api, secret_file, "list", token=token, drains=drains)
    assert run.returncode == 0, run.stderr
    blocks = {block.split("id:", 1)[1].split()[0]: block for block in run.stdout.split("\n\n")}
    assert set(blocks) == {*mine, other}
    assert all("this receiver: yes" in blocks[drain_id] for drain_id in mine)
    assert "this receiver: yes" not in blocks[other]
    assert f"3 drain(s) (--api {'drains' if drains else 'integration'}); 2 point at {URL}" in run.stdout
    assert api.calls() == [LIST if drains else "GET /v2/integrations/log-drains"]
    as_json = register(api, secret_file, "list", "--json", token=token, drains=drains)
    assert [d["id"] for d in json.loads(as_json.stdout)] == mine


def test_list_with_no_drain_says_so(api: FakeVercel, secret_file: Path) -> None:
    api.add_drain(ELSEWHERE)
    run = register(api, secret_file, "list")
    assert run.returncode == 0
    assert f"No drain (--api drains) points at {URL}" in run.stdout and ELSEWHERE in run.stdout


@pytest.mark.parametrize("drains", [True, False])
def test_remove_deletes_through_the_right_api(
    api: FakeVercel, secret_file: Path, drains: bool
) -> None:
    add = api.add_drain if drains else api.add_integration_drain
    target, keep = add(URL), add(URL)
    token = PERSONAL_TOKEN if drains else INTEGRATION_TOKEN
    run = register(api, secret_file, "remove", target, token=token, drains=drains)
    assert run.returncode == 0, run.stderr
    path = f"/v1/drains/{target}" if drains else f"/v1/integrations/log-drains/{target}"
    assert api.sent("DELETE") and api.sent("DELETE")[0].path == path
    assert [d["id"] for d in (api.drains if drains else api.integration_drains)] == [keep]
    assert f"Deleted drain {target}" in run.stdout


def test_remove_dry_run_deletes_nothing(api: FakeVercel, secret_file: Path) -> None:
    target = api.add_drain(URL)
    run = register(api, secret_file, "remove", target, "--dry-run", "--team-id", TEAM_ID)
    assert run.returncode == 0
    assert f"DELETE {api.url}/v1/drains/{target}?teamId={TEAM_ID}" in run.stdout
    assert api.sent("DELETE") == [] and len(api.drains) == 1


def test_remove_refuses_a_drain_of_another_receiver(api: FakeVercel, secret_file: Path) -> None:
    other = api.add_drain(ELSEWHERE)
    run = register(api, secret_file, "remove", other)
    assert run.returncode == 1
    line = run.one_error_line()
    assert ELSEWHERE in line and f"--url {ELSEWHERE}" in line
    assert api.sent("DELETE") == []


def test_remove_of_an_unknown_id_points_at_list(api: FakeVercel, secret_file: Path) -> None:
    run = register(api, secret_file, "remove", "drn_missing")
    assert run.returncode == 1
    assert "drn_missing" in run.one_error_line() and "register.py list" in run.stderr


@pytest.mark.parametrize("command", [["list"], ["remove", "drn_x"]])
def test_list_and_remove_explain_api_errors(
    api: FakeVercel, secret_file: Path, command: list[str]
) -> None:
    run = register(api, secret_file, *command, token="revoked-token")
    assert run.returncode == 1
    assert "401" in run.one_error_line() and "VERCEL_TOKEN" in run.stderr
    api.reset()
    api.fail("GET", "/v1/drains", action="drop")
    dropped = register(api, secret_file, *command)
    assert dropped.returncode == 1 and "connection" in dropped.one_error_line()


def test_remove_needs_an_id(api: FakeVercel, secret_file: Path) -> None:
    run = register(api, secret_file, "remove")
    assert run.returncode == 2
    assert "id" in run.one_error_line()
    assert api.requests == []


def test_remove_deleting_fails_is_explained(api: FakeVercel, secret_file: Path) -> None:
    target = api.add_drain(URL)
    api.fail("DELETE", "/v1/drains/", status=404)
    run = register(api, secret_file, "remove", target)
    assert run.returncode == 1
    assert "404" in run.one_error_line()


# --- 5. the full loop: a receiver serving the fetched code and verifying deliveries --------------


def record(n: int) -> bytes:
    return json.dumps({"id": str(n), "deploymentId": "dpl_1", "source": "lambda",
                       "host": "x.vercel.app", "timestamp": 1700000000000, "projectId": "prj_1",
                       "level": "info", "message": f"m{n}"}).encode() + b"\n"


def test_full_loop_receiver_serves_the_code_and_accepts_gzip_deliveries(
    api: FakeVercel, secret_file: Path, tmp_path: Path
) -> None:
    api.verification_code = "vc-initial"
    assert register(api, secret_file).returncode == 0
    first = created_body(api)["delivery"]["secret"]
    data = tmp_path / "data"
    env = {"DRAIN_SECRET_FILE": str(secret_file)}  # DRAIN_VERIFY_FILE: the default, beside it
    with running_receiver(tmp_path / "rx", ["--sink", "file", "--dir", str(data)], env) as rx:
        assert httpx.get(rx.url + "/").headers["x-vercel-verify"] == "vc-initial"
        handshake = httpx.post(rx.url + "/", content=b"{}")
        assert handshake.status_code == 200
        assert handshake.headers["x-vercel-verify"] == "vc-initial"

        compressed = gzip.compress(record(1))
        delivered = httpx.post(rx.url + "/", content=compressed, headers={
            "content-encoding": "gzip", "content-type": "application/x-ndjson",
            "x-vercel-signature": sign(compressed, first)})
        assert delivered.status_code == 200

        api.reset()
        api.verification_code = "vc-rotated"
        assert register(api, secret_file, "--replace").returncode == 0
        second = created_body(api)["delivery"]["secret"]
        assert rx.post(record(2), second).status_code == 200
        assert rx.post(record(3), first).status_code == 200
        assert httpx.get(rx.url + "/").headers["x-vercel-verify"] == "vc-rotated"
    lines = b"".join(p.read_bytes() for p in sorted(data.rglob("*.ndjson")))
    assert all(f'"id": "{n}"'.encode() in lines or f'"id":"{n}"'.encode() in lines
               for n in (1, 2, 3))


def test_the_fake_answers_as_the_sdk_describes(api: FakeVercel) -> None:
    """Every 2xx answer the fake sends is checked against the SDK's schemas (`validation_errors`);
    here with drains of every shape register.py must read, and a known drift caught."""
    api.add_drain(URL, status="disabled", disabledReason="account-plan-downgrade",
                  disabledAt=1700000000000)
    api.add_drain(URL, schemas=["speed_insights"], status="errored",
                  firstErrorTimestamp=1700000000000)
    api.add_drain(URL, schemas=["trace"])
    api.add_drain(URL, body={"projects": "some", "projectIds": ["prj_a"],
                             "filter": {"version": "v2", "filter": {"type": "odata",
                                                                    "text": "level eq 'error'"}},
                             "sampling": [{"type": "head_sampling", "rate": 0.1}]})
    answer = httpx.get(f"{api.url}/v1/drains",
                       headers={"authorization": f"Bearer {PERSONAL_TOKEN}"})
    assert answer.status_code == 200 and len(answer.json()["drains"]) == 4
    assert api.validation_errors == []
    assert "speed_insights" in answer.text and "speedInsights" not in answer.text
    drifted = json.loads(answer.text)
    del drifted["drains"][0]["projectAccess"]["managedBy"]
    assert sdk_errors("get-drains.response", drifted)
    assert SDK_VERSION.count(".") == 2
