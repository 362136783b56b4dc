"""register.py with `--api integration` (issue 3), run as a subprocess against a fake Vercel API."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest

from receiver.secret_file import read_secrets
from tests.fake_vercel import (
    INTEGRATION_TOKEN,
    PERSONAL_TOKEN,
    TEAM_ID,
    TEAM_SLUG,
    FakeVercel,
    Run,
    run_register,
)
from tests.support import free_port, running_receiver

URL = "https://drain.example.com/"
SECRET_SHAPE = re.compile(r"[A-Za-z0-9_-]{32,100}")
LIST = "GET /v2/integrations/log-drains"
VERIFY = "GET /v1/verify-endpoint"
CREATE = "POST /v2/integrations/log-drains"


def register(
    api: FakeVercel, secret_file: Path, *args: str, token: str | None = INTEGRATION_TOKEN,
    **env: str | None,
) -> Run:
    """register.py against the fake, with --url given unless DRAIN_URL/a platform says it."""
    url_given = any(k in env for k in ("DRAIN_URL", "RENDER_EXTERNAL_URL", "RAILWAY_PUBLIC_DOMAIN",
                                       "FLY_APP_NAME", "NO_URL"))
    env.pop("NO_URL", None)
    base: dict[str, str | None] = {
        "VERCEL_API_URL": api.url, "VERCEL_TOKEN": token, "DRAIN_SECRET_FILE": str(secret_file),
        "DRAIN_API": "integration",  # this module tests the integration API; drains: the default
    }
    argv = list(args) if url_given or "--url" in args or "--help" in args else [*args, "--url", URL]
    run = run_register(argv, home=secret_file.parent.parent / "home", env={**base, **env})
    return run.checked(api)


def sent_secret(api: FakeVercel) -> str:
    (create,) = api.sent("POST")
    return create.json()["secret"]



# --- Contract: token, options, --help ---------------------------------------------------------


def test_missing_token_names_vercel_token_and_sends_nothing(
    api: FakeVercel, secret_file: Path
) -> None:
    run = register(api, secret_file, token=None)
    assert run.returncode == 2
    assert "VERCEL_TOKEN" in run.one_error_line()
    assert api.requests == []
    assert not secret_file.exists()


def test_help_shows_every_option_with_its_variable_and_default(
    api: FakeVercel, secret_file: Path
) -> None:
    run = register(api, secret_file, "--help")
    assert run.returncode == 0
    text = " ".join(run.stdout.split())
    for flag, variable in [
        ("--url", "DRAIN_URL"), ("--api-url", "VERCEL_API_URL"), ("--team-id", "VERCEL_TEAM_ID"),
        ("--slug", "VERCEL_TEAM_SLUG"), ("--name", "DRAIN_NAME"),
        ("--format", "DRAIN_DELIVERY_FORMAT"), ("--source", "DRAIN_SOURCES"),
        ("--environment", "DRAIN_ENVIRONMENTS"), ("--project-id", "DRAIN_PROJECT_IDS"),
        ("--header", "DRAIN_HEADERS"), ("--secret-file", "DRAIN_SECRET_FILE"),
        ("--replace", "DRAIN_REPLACE"), ("--dry-run", "DRAIN_DRY_RUN"), ("--json", "DRAIN_JSON"),
        ("--api", "DRAIN_API"), ("--compression", "DRAIN_COMPRESSION"),
        ("--verify-file", "DRAIN_VERIFY_FILE"), ("--timeout", "VERCEL_API_TIMEOUT"),
    ]:
        assert flag in text and f"env {variable}" in text, flag
    for default in ["(default: https://api.vercel.com)", "(default: ndjson)",
                    "(default: vercel-drain-receiver)", "(default: drains)",
                    "(default: ~/.config/vercel-drain-receiver/drain-secret)"]:
        assert default in text
    assert "VERCEL_TOKEN" in text and "RENDER_EXTERNAL_URL" in text
    assert "--token" not in text
    assert api.requests == []


@pytest.mark.parametrize(
    ("args", "env", "named", "allowed"),
    [
        (["--name", "bad/name"], {}, "--name", None),
        (["--name", "x" * 101], {}, "--name", None),
        (["--name", ""], {}, "--name", None),
        (["--url", "ftp://drain.example.com/"], {"DRAIN_URL": "ignored"}, "--url", None),
        (["--url", "https://"], {"DRAIN_URL": "ignored"}, "--url", None),
        (["--format", "xml"], {}, "--format", "json, ndjson"),
        ([], {"DRAIN_DELIVERY_FORMAT": "csv"}, "--format", "json, ndjson"),
        (["--source", "bogus"], {}, "--source",
         "static, lambda, build, edge, external, firewall"),
        (["--source", "redirect"], {}, "--source",
         "static, lambda, build, edge, external, firewall"),
        ([], {"DRAIN_SOURCES": "build,nope"}, "--source", "static, lambda"),
        (["--environment", "staging"], {}, "--environment", "preview, production"),
        (["--project-id", "prj-with-dash"], {}, "--project-id", None),
        (["--header", "no colon here"], {}, "--header", None),
        (["--header", "Bad Name: x"], {}, "--header", None),
        (["--compression", "gzip"], {}, "--compression", "--api drains"),
        (["--api", "v3"], {}, "--api", "integration, drains"),
        (["--timeout", "0"], {}, "--timeout", None),
        (["--api-url", "not a url"], {}, "--api-url", None),
        (["--team-id", TEAM_ID, "--slug", TEAM_SLUG], {}, "--slug", None),
        ([], {"DRAIN_REPLACE": "maybe"}, "DRAIN_REPLACE", None),
        (["--no-such-option"], {}, "--no-such-option", None),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_request(
    api: FakeVercel, secret_file: Path, args: list[str], env: dict[str, str], named: str,
    allowed: str | None,
) -> None:
    run = register(api, secret_file, *args, **env)
    assert run.returncode == 2
    line = run.one_error_line()
    assert named in line
    if allowed:
        assert allowed in line
    assert api.requests == []
    assert not secret_file.exists()


@pytest.mark.parametrize("token", ["tok\nen-0123", "\"quoted token\"", "tökén"])
def test_a_token_that_cannot_be_one_is_a_usage_error(
    api: FakeVercel, secret_file: Path, token: str
) -> None:
    run = register(api, secret_file, token=token)
    assert run.returncode == 2
    assert "VERCEL_TOKEN" in run.one_error_line() and token not in run.stderr
    assert api.requests == []


def test_a_bad_value_from_a_variable_names_the_variable(api: FakeVercel, secret_file: Path) -> None:
    run = register(api, secret_file, DRAIN_DELIVERY_FORMAT="csv")
    assert run.returncode == 2
    assert "--format (DRAIN_DELIVERY_FORMAT) 'csv'" in run.one_error_line()


# --- Creating the drain -------------------------------------------------------------------------


def test_creates_the_drain_with_a_new_secret_in_the_secret_file(
    api: FakeVercel, secret_file: Path
) -> None:
    run = register(api, secret_file)
    assert run.returncode == 0, run.stderr
    assert api.calls() == [LIST, VERIFY, CREATE]
    assert api.validation_errors == []
    body = api.sent("POST")[0].json()
    secret = body.pop("secret")
    assert body == {"name": "vercel-drain-receiver", "url": URL, "deliveryFormat": "ndjson"}
    assert SECRET_SHAPE.fullmatch(secret)
    assert read_secrets(secret_file) == [secret]
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert all(r.headers["authorization"] == f"Bearer {INTEGRATION_TOKEN}" for r in api.requests)
    assert all(r.query == {} for r in api.requests)
    (drain,) = api.integration_drains
    for shown in [drain["id"], "vercel-drain-receiver", URL, "ndjson",
                  "static, lambda, build, edge, external", str(secret_file)]:
        assert shown in run.stdout


def test_every_run_generates_a_different_strong_secret(api: FakeVercel, tmp_path: Path) -> None:
    secrets = []
    for n in range(3):
        api.reset()
        assert register(api, tmp_path / f"s{n}" / "secret").returncode == 0
        secrets.append(sent_secret(api))
    assert len(set(secrets)) == 3
    assert all(SECRET_SHAPE.fullmatch(s) and len(s) >= 32 for s in secrets)


def test_secret_is_in_the_file_before_the_drain_is_created(
    api: FakeVercel, secret_file: Path
) -> None:
    secret_file.parent.mkdir(parents=True)
    secret_file.write_text("older-secret-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n")
    api.watch_file = secret_file
    assert register(api, secret_file).returncode == 0
    secret = sent_secret(api)
    assert api.file_at_create == [f"{secret}\nolder-secret-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n"]


def test_secrets_already_in_the_file_stay_below_the_new_one(
    api: FakeVercel, secret_file: Path
) -> None:
    secret_file.parent.mkdir(parents=True)
    secret_file.write_text("# comment\nfirst-old-secret-0123456789abcdefghijk\n"
                           "second-old-secret-0123456789abcdefghij\n")
    secret_file.chmod(0o644)
    assert register(api, secret_file).returncode == 0
    assert read_secrets(secret_file) == [
        sent_secret(api), "first-old-secret-0123456789abcdefghijk",
        "second-old-secret-0123456789abcdefghij"]
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600


def test_every_option_reaches_the_request_body(api: FakeVercel, secret_file: Path) -> None:
    run = register(
        api, secret_file, "--name", "My drain_1", "--format", "json", "--source", "build",
        "--source", "lambda", "--environment", "production", "--project-id", "prj_abc123",
        "--project-id", "prj_def", "--header", "X-Drain-Token: abc: def", "--header",
        "Authorization: Basic Zm9v", "--team-id", TEAM_ID)
    assert run.returncode == 0, run.stderr
    assert api.validation_errors == []
    body = api.sent("POST")[0].json()
    body.pop("secret")
    assert body == {
        "name": "My drain_1", "url": URL, "deliveryFormat": "json",
        "sources": ["build", "lambda"], "environments": ["production"],
        "projectIds": ["prj_abc123", "prj_def"],
        "headers": {"X-Drain-Token": "abc: def", "Authorization": "Basic Zm9v"},
    }
    assert {r.query["teamId"] for r in api.requests} == {TEAM_ID}
    assert "build, lambda" in run.stdout and "json" in run.stdout


def test_environment_variables_work_like_the_flags(api: FakeVercel, secret_file: Path) -> None:
    run = register(
        api, secret_file, DRAIN_URL="https://env.example.com/drain", DRAIN_NAME="from env",
        DRAIN_DELIVERY_FORMAT="json", DRAIN_SOURCES="edge, static", DRAIN_ENVIRONMENTS="preview",
        DRAIN_PROJECT_IDS="prj_1,prj_2", DRAIN_HEADERS="X-A: 1\nX-B: 2", VERCEL_TEAM_SLUG=TEAM_SLUG)
    assert run.returncode == 0, run.stderr
    body = api.sent("POST")[0].json()
    body.pop("secret")
    assert body == {
        "name": "from env", "url": "https://env.example.com/drain", "deliveryFormat": "json",
        "sources": ["edge", "static"], "environments": ["preview"],
        "projectIds": ["prj_1", "prj_2"], "headers": {"X-A": "1", "X-B": "2"},
    }
    assert {r.query["slug"] for r in api.requests} == {TEAM_SLUG}


def test_a_flag_wins_over_its_variable(api: FakeVercel, secret_file: Path) -> None:
    run = register(api, secret_file, "--url", "https://flag.example.com/", "--source", "edge",
                   DRAIN_URL="https://env.example.com/", DRAIN_SOURCES="build")
    assert run.returncode == 0
    body = api.sent("POST")[0].json()
    assert (body["url"], body["sources"]) == ("https://flag.example.com/", ["edge"])


@pytest.mark.parametrize(
    ("variable", "value", "url"),
    [
        ("RENDER_EXTERNAL_URL", "https://drain.onrender.com", "https://drain.onrender.com"),
        ("RAILWAY_PUBLIC_DOMAIN", "drain.up.railway.app", "https://drain.up.railway.app"),
        ("FLY_APP_NAME", "my-drain", "https://my-drain.fly.dev"),
    ],
)
def test_url_is_derived_from_the_platform(
    api: FakeVercel, secret_file: Path, variable: str, value: str, url: str
) -> None:
    run = register(api, secret_file, **{variable: value})
    assert run.returncode == 0, run.stderr
    assert api.sent("POST")[0].json()["url"] == url


def test_no_url_anywhere_is_a_usage_error(api: FakeVercel, secret_file: Path) -> None:
    run = register(api, secret_file, NO_URL="1")
    assert run.returncode == 2
    line = run.one_error_line()
    assert "--url" in line and "DRAIN_URL" in line
    assert api.requests == []


def test_json_prints_the_api_object_without_the_secret(api: FakeVercel, secret_file: Path) -> None:
    run = register(api, secret_file, "--json")
    assert run.returncode == 0, run.stderr
    printed = json.loads(run.stdout)
    assert printed == api.integration_drains[0]
    assert "secret" not in run.stdout


# --- Dry run ------------------------------------------------------------------------------------


def test_dry_run_shows_the_requests_masked_and_changes_nothing(
    api: FakeVercel, secret_file: Path
) -> None:
    run = register(api, secret_file, "--dry-run", "--source", "build", "--team-id", TEAM_ID)
    assert run.returncode == 0, run.stderr
    assert api.calls() == [LIST]
    assert not secret_file.exists() and not secret_file.with_name("drain-verify").exists()
    assert api.integration_drains == []
    assert f"POST {api.url}/v2/integrations/log-drains?teamId={TEAM_ID}" in run.stdout
    assert f"GET {api.url}/v1/verify-endpoint?teamId={TEAM_ID}" in run.stdout
    assert '"secret": "***"' in run.stdout and '"sources": [' in run.stdout
    assert str(secret_file) in run.stdout


def test_dry_run_json_lists_the_steps(api: FakeVercel, secret_file: Path) -> None:
    old = api.add_integration_drain(URL)
    run = register(api, secret_file, "--dry-run", "--replace", "--json")
    assert run.returncode == 0, run.stderr
    steps = json.loads(run.stdout)["steps"]
    assert [s.get("method") for s in steps] == [None, "GET", "POST", "DELETE"]
    assert steps[2]["body"]["secret"] == "***"
    assert steps[3]["url"] == f"{api.url}/v1/integrations/log-drains/{old}"
    assert api.calls() == [LIST]
    assert not secret_file.exists()


# --- Idempotence and rotation -------------------------------------------------------------------


@pytest.mark.parametrize("listed", [URL, "https://DRAIN.example.com", "https://drain.example.com:443/"])
def test_an_existing_drain_for_the_url_is_kept(
    api: FakeVercel, secret_file: Path, listed: str
) -> None:
    api.add_integration_drain("https://elsewhere.example.com/", name="other")
    existing = api.add_integration_drain(listed)
    run = register(api, secret_file)
    assert run.returncode == 0, run.stderr
    assert api.calls() == [LIST]
    assert existing in run.stdout and "--replace" in run.stdout
    assert "nothing was created" in run.stdout
    assert not secret_file.exists()
    assert "holds no secret" in run.stderr  # and says what to do about it


def test_replace_creates_first_then_deletes_and_keeps_the_old_secret(
    api: FakeVercel, secret_file: Path
) -> None:
    old_secret = "old-secret-0123456789abcdefghijklmnopqrstu"
    old = api.add_integration_drain(URL, secret=old_secret)
    other = api.add_integration_drain("https://elsewhere.example.com/")
    secret_file.parent.mkdir(parents=True)
    secret_file.write_text(old_secret + "\n")
    run = register(api, secret_file, "--replace")
    assert run.returncode == 0, run.stderr
    assert api.calls() == [LIST, VERIFY, CREATE, f"DELETE /v1/integrations/log-drains/{old}"]
    assert read_secrets(secret_file) == [sent_secret(api), old_secret]
    assert [d["id"] for d in api.integration_drains] == [other, api.integration_drains[1]["id"]]
    assert f"Deleted the old drain {old}" in run.stdout


def test_replace_without_an_existing_drain_just_creates(api: FakeVercel, secret_file: Path) -> None:
    run = register(api, secret_file, "--replace")
    assert run.returncode == 0
    assert api.calls() == [LIST, VERIFY, CREATE]


def test_replace_that_cannot_delete_says_how_to_finish(api: FakeVercel, secret_file: Path) -> None:
    old = api.add_integration_drain(URL)
    api.fail("DELETE", "/v1/integrations/log-drains/", times=1, status=403)
    run = register(api, secret_file, "--replace")
    assert run.returncode == 1
    new = api.integration_drains[-1]["id"]
    assert new in run.stdout
    line = run.one_error_line()
    assert f"new drain {api.integration_drains[-1]['id']} is in place" in line
    assert "403" in line and f"python register.py remove {old}" in line
    assert [d["id"] for d in api.integration_drains] == [old, new]


# --- Errors, retries ----------------------------------------------------------------------------


def test_400_for_a_non_integration_token_says_which_token_is_needed(
    api: FakeVercel, secret_file: Path
) -> None:
    run = register(api, secret_file, token=PERSONAL_TOKEN)
    assert run.returncode == 1
    line = run.one_error_line()
    assert "400" in line and "integration's OAuth2 access token" in line
    assert "Register the drain" in line and "--api drains" in line
    assert read_secrets(secret_file) == []  # the unused secret is taken back out


def test_400_explanation_does_not_depend_on_the_api_message(
    api: FakeVercel, secret_file: Path
) -> None:
    api.fail("POST", "/v2/integrations/log-drains", status=400, body={"unexpected": True})
    run = register(api, secret_file)
    assert run.returncode == 1
    assert "integration's OAuth2 access token" in run.one_error_line()


@pytest.mark.parametrize(
    ("how", "token", "args", "expected"),
    [
        ({}, "not-a-valid-token", [], ["401", "VERCEL_TOKEN", "new one"]),
        ({}, INTEGRATION_TOKEN, ["--team-id", "team_other"], ["403", "--team-id"]),
        ({"status": 404}, INTEGRATION_TOKEN, [], ["404", "--api-url"]),
        ({"status": 502, "headers": {"Retry-After": "0"}, "times": 4}, INTEGRATION_TOKEN, [],
         ["502", "4 attempts", "try again later"]),
        ({"action": "invalid-json"}, INTEGRATION_TOKEN, [], ["not JSON"]),
        ({"action": "drop"}, INTEGRATION_TOKEN, [], ["connection", "check your network"]),
        ({"action": "slow", "status": 200, "body": [], "delay": 3}, INTEGRATION_TOKEN,
         ["--timeout", "0.5"], ["in time", "--timeout"]),
    ],
)
def test_api_failures_are_explained_in_one_line_with_exit_1(
    api: FakeVercel, secret_file: Path, how: dict, token: str, args: list[str],
    expected: list[str],
) -> None:
    if how:
        api.fail("GET", "/v2/integrations/log-drains", **{"times": 1, **how})
    run = register(api, secret_file, *args, token=token)
    assert run.returncode == 1
    line = run.one_error_line()
    for text in expected:
        assert text in line
    assert api.sent("POST") == []
    assert not secret_file.exists()


def test_network_failure_is_explained(api: FakeVercel, secret_file: Path) -> None:
    run = register(api, secret_file, "--api-url", f"http://127.0.0.1:{free_port()}")
    assert run.returncode == 1
    assert "could not connect" in run.one_error_line()
    assert not secret_file.exists()


def test_5xx_is_retried_then_succeeds(api: FakeVercel, secret_file: Path) -> None:
    api.fail("POST", "/v2/integrations/log-drains", times=2, status=503)
    run = register(api, secret_file)
    assert run.returncode == 0, run.stderr
    assert len(api.sent("POST")) == 3
    assert run.stderr.count("Vercel answered 503") == 2
    assert len(api.integration_drains) == 1
    assert {r.json()["secret"] for r in api.sent("POST")} == set(read_secrets(secret_file))
    assert len(read_secrets(secret_file)) == 1


def test_5xx_that_persists_keeps_the_secret_in_case_the_drain_exists(
    api: FakeVercel, secret_file: Path
) -> None:
    api.fail("POST", "/v2/integrations/log-drains", times=4, status=500,
             headers={"Retry-After": "0"})
    run = register(api, secret_file)
    assert run.returncode == 1
    line = run.one_error_line()
    assert "500" in line and "may have been created" in line and "register.py list" in line
    assert len(api.sent("POST")) == 4
    assert read_secrets(secret_file) == [api.sent("POST")[0].json()["secret"]]


def test_429_waits_for_retry_after(api: FakeVercel, secret_file: Path) -> None:
    api.fail("POST", "/v2/integrations/log-drains", status=429, headers={"Retry-After": "1"},
             body={"error": {"code": "rate_limited", "message": "slow down",
                             "limit": {"remaining": 0, "reset": 1, "total": 20}}})
    run = register(api, secret_file)
    assert run.returncode == 0, run.stderr
    assert len(api.sent("POST")) == 2
    assert "Vercel answered 429" in run.stderr and "retrying in 1s" in run.stderr
    assert run.seconds >= 1


def test_429_with_a_long_retry_after_gives_up_at_once(api: FakeVercel, secret_file: Path) -> None:
    api.fail("POST", "/v2/integrations/log-drains", status=429, headers={"Retry-After": "3600"})
    run = register(api, secret_file)
    assert run.returncode == 1
    line = run.one_error_line()
    assert "429" in line and "try again in 3600 seconds" in line
    assert len(api.sent("POST")) == 1
    assert run.seconds < 10
    assert read_secrets(secret_file) == []


def test_429_retries_are_bounded(api: FakeVercel, secret_file: Path) -> None:
    api.fail("GET", "/v2/integrations/log-drains", times=10, status=429,
             headers={"Retry-After": "0"})
    run = register(api, secret_file)
    assert run.returncode == 1
    assert "rate limited (4 attempts)" in run.one_error_line()
    assert len(api.sent("GET")) == 4


def test_unreadable_create_answer_is_explained(api: FakeVercel, secret_file: Path) -> None:
    api.fail("POST", "/v2/integrations/log-drains", action="invalid-json")
    run = register(api, secret_file)
    assert run.returncode == 1
    line = run.one_error_line()
    assert "not JSON" in line and "may have been created" in line


def test_unwritable_secret_file_is_a_usage_error(api: FakeVercel, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    run = register(api, blocker / "drain-secret")
    assert run.returncode == 2
    assert "--secret-file" in run.one_error_line()
    assert api.sent("POST") == []


# --- The full loop: a receiver that reads the same secret file -----------------------------------


def ndjson(*ids: str) -> bytes:
    return b"".join(
        json.dumps({"id": i, "deploymentId": "dpl_1", "source": "lambda", "host": "x.vercel.app",
                    "timestamp": 1700000000000, "projectId": "prj_1", "level": "info",
                    "message": f"hello {i}"}).encode() + b"\n"
        for i in ids)


def written(data_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(data_dir.rglob("*.ndjson")))


def test_full_loop_receiver_accepts_what_vercel_would_sign(
    api: FakeVercel, secret_file: Path, tmp_path: Path
) -> None:
    assert register(api, secret_file).returncode == 0
    secret = sent_secret(api)
    data = tmp_path / "data"
    env = {"DRAIN_SECRET_FILE": str(secret_file)}
    with running_receiver(tmp_path / "rx", ["--sink", "file", "--dir", str(data)], env) as rx:
        assert rx.post(ndjson("1001"), secret).status_code == 200
        assert rx.post(ndjson("1002"), "not-the-secret-0123456789abcdefghijk").status_code == 403
    assert b'"1001"' in written(data) and b'"1002"' not in written(data)


def test_full_loop_rotation_keeps_both_secrets_working_without_a_restart(
    api: FakeVercel, secret_file: Path, tmp_path: Path
) -> None:
    assert register(api, secret_file).returncode == 0
    first = sent_secret(api)
    data = tmp_path / "data"
    env = {"DRAIN_SECRET_FILE": str(secret_file)}
    with running_receiver(tmp_path / "rx", ["--sink", "file", "--dir", str(data)], env) as rx:
        assert rx.post(ndjson("2001"), first).status_code == 200
        api.requests.clear()
        run = register(api, secret_file, "--replace")
        assert run.returncode == 0, run.stderr
        second = sent_secret(api)
        assert second != first
        assert rx.post(ndjson("2002"), second).status_code == 200
        assert rx.post(ndjson("2003"), first).status_code == 200
    assert all(f'"{n}"'.encode() in written(data) for n in ("2001", "2002", "2003"))
    assert len(api.integration_drains) == 1
