"""register.py against drains as Vercel really lists them (issue 11 items 1-5, issue 16 item 12):
disabled and errored drains, drains of other types at the same URL, what a drain covers, the
errors Vercel answers with, `list` without a URL, and what a failed run leaves behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fake_vercel import INTEGRATION_TOKEN, FakeVercel, run_register
from tests.test_register_drains import ELSEWHERE, URL, register


@pytest.mark.parametrize(
    ("fields", "expected"),
    [({"status": "disabled", "disabledReason": "account-plan-downgrade",
       "disabledAt": 1700000000000}, ["disabled (account-plan-downgrade)"]),
     ({"status": "errored", "firstErrorTimestamp": 1700000000000},
      ["errored (since 2023-11-14", "check its log"])],
)
def test_a_disabled_or_errored_drain_is_not_taken_for_a_working_one(
    api: FakeVercel, secret_file: Path, fields: dict, expected: list[str]
) -> None:
    drain = api.add_drain(URL, **fields)
    run = register(api, secret_file)
    assert run.returncode == 1
    line = run.one_error_line()
    assert drain in line and "--replace" in line and "nothing was created" not in run.stdout
    assert all(text in line for text in expected)
    assert api.sent("POST") == []
    listed = register(api, secret_file, "list")
    assert listed.returncode == 0 and expected[0] in listed.stdout


def test_a_working_drain_beside_a_disabled_one_is_kept(api: FakeVercel, secret_file: Path) -> None:
    api.add_drain(URL, status="disabled", disabledReason="disabled-by-owner")
    working = api.add_drain(URL)
    run = register(api, secret_file)
    assert run.returncode == 0, run.stderr
    assert f"Drain {working} " in run.stdout and "status:       enabled" in run.stdout


def test_drains_of_other_types_are_neither_reused_nor_deleted(
    api: FakeVercel, secret_file: Path
) -> None:
    speed = api.add_drain(URL, schemas=["speed_insights"])
    created = register(api, secret_file)
    assert created.returncode == 0, created.stderr
    assert "nothing was created" not in created.stdout and len(api.drains) == 2
    log_drain = api.drains[1]["id"]
    api.requests.clear()
    replaced = register(api, secret_file, "--replace")
    assert replaced.returncode == 0, replaced.stderr
    assert [r.path for r in api.sent("DELETE")] == [f"/v1/drains/{log_drain}"]
    assert speed in [d["id"] for d in api.drains]
    removed = register(api, secret_file, "remove", speed)
    assert removed.returncode == 1
    assert "speed_insights" in removed.one_error_line()
    assert all(r.path != f"/v1/drains/{speed}" for r in api.sent("DELETE"))
    assert speed in [d["id"] for d in api.drains]


def test_list_shows_what_each_drain_covers(api: FakeVercel, secret_file: Path) -> None:
    api.add_drain(URL, body={
        "projects": "some", "projectIds": ["prj_a", "prj_b"],
        "filter": {"version": "v2", "filter": {"type": "odata", "text": "level eq 'error'"}},
        "sampling": [{"type": "head_sampling", "rate": 0.25, "env": "production"}]})
    run = register(api, secret_file, "list")
    assert run.returncode == 0, run.stderr
    for shown in ["projects:     prj_a, prj_b", "filter:       level eq 'error'",
                  "sampling:     0.25 of production", "types:        log"]:
        assert shown in run.stdout, shown
    assert "sources:      all" in run.stdout  # no basic filter: every source


def test_integration_list_shows_header_names_never_values(
    api: FakeVercel, secret_file: Path
) -> None:
    drain = api.add_integration_drain(URL)
    api.integration_drains[0]["headers"] = {"X-Auth": "header-value-never-shown"}
    api.integration_drains[0]["projectIds"] = ["prj_x"]
    run = register(api, secret_file, "list", token=INTEGRATION_TOKEN, drains=False)
    assert run.returncode == 0, run.stderr
    assert drain in run.stdout and "X-Auth" in run.stdout and "prj_x" in run.stdout
    assert "header-value-never-shown" not in run.stdout


@pytest.mark.parametrize(
    ("status", "message", "expected", "not_said"),
    [(402, "Payment required", ["402", "Pro or Enterprise"], "check the options"),
     (410, "Gone", ["410", "retired"], "check the options")],
)
def test_402_and_410_say_what_they_mean(
    api: FakeVercel, secret_file: Path, status: int, message: str, expected: list[str],
    not_said: str,
) -> None:
    api.fail("POST", "/v1/drains", status=status,
             body={"error": {"code": "x", "message": message}})
    run = register(api, secret_file)
    assert run.returncode == 1
    line = run.one_error_line()
    assert all(text in line for text in expected) and not_said not in line


def test_an_integration_400_about_the_input_does_not_blame_the_token(
    api: FakeVercel, secret_file: Path
) -> None:
    api.fail("POST", "/v2/integrations/log-drains", status=400,
             body={"error": {"code": "bad_request", "message": "url should match format uri"}})
    run = register(api, secret_file, token=INTEGRATION_TOKEN, drains=False)
    assert run.returncode == 1
    line = run.one_error_line()
    assert "url should match format uri" in line and "OAuth2" not in line


def test_list_without_a_url_shows_every_drain(api: FakeVercel, secret_file: Path) -> None:
    ids = [api.add_drain(URL), api.add_drain(ELSEWHERE, schemas=["trace"])]
    run = run_register(["list"], home=secret_file.parent.parent / "home", env={
        "VERCEL_API_URL": api.url, "VERCEL_TOKEN": "personal-access-token-9876543210"})
    assert run.checked(api).returncode == 0, run.stderr
    assert all(drain_id in run.stdout for drain_id in ids)
    assert "2 drain(s)" in run.stdout and ELSEWHERE in run.stdout


def test_a_failed_create_leaves_no_empty_secret_file(api: FakeVercel, secret_file: Path) -> None:
    api.fail("POST", "/v1/drains", status=403)
    run = register(api, secret_file)
    assert run.returncode == 1
    assert not secret_file.exists()


def test_the_usage_line_shows_every_command(api: FakeVercel, secret_file: Path) -> None:
    usage = register(api, secret_file, "--help").stdout.splitlines()[0]
    assert "list [options]" in usage and "remove ID" in usage
