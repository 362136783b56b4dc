"""register.py --schema (issue 12, "Registering"): one drain per drain type, the same secret,
idempotent per type; list, remove and --replace consider only the types asked for."""

from __future__ import annotations

from pathlib import Path

from receiver.secret_file import read_secrets
from tests.fake_vercel import FakeVercel
from tests.test_register_drains import URL, register

TRACES = "https://logs.example.org/v1/traces"
TYPES = ["--schema", "log", "--schema", "trace", "--schema", "speed_insights"]


def types_of(api: FakeVercel) -> list[list[str]]:
    return [sorted(drain["schemas"]) for drain in api.drains]


def test_one_drain_per_type_with_one_secret(api: FakeVercel, secret_file: Path) -> None:
    run = register(api, secret_file, *TYPES, "--trace-encoding", "json")
    assert run.returncode == 0, run.stderr
    bodies = [r.json() for r in api.sent("POST")]
    assert [b["schemas"] for b in bodies] == [
        {"log": {"version": "v1"}}, {"trace": {"version": "v1"}},
        {"speed_insights": {"version": "v1"}}]
    secrets = {b["delivery"].pop("secret") for b in bodies}
    assert bodies[1]["delivery"] == {"type": "otlphttp", "endpoint": {"traces": TRACES},
                                     "encoding": "json", "headers": {}}
    assert bodies[2]["delivery"]["endpoint"] == URL
    assert len(secrets) == 1 and read_secrets(secret_file) == list(secrets)
    assert types_of(api) == [["log"], ["trace"], ["speed_insights"]]
    assert "Registered trace drain" in run.stdout and TRACES in run.stdout


def test_each_type_is_idempotent_and_only_missing_types_are_created(
    api: FakeVercel, secret_file: Path
) -> None:
    assert register(api, secret_file, *TYPES).returncode == 0
    api.requests.clear()
    again = register(api, secret_file, *TYPES)
    assert again.returncode == 0, again.stderr
    assert api.sent("POST") == [] and len(api.drains) == 3
    more = register(api, secret_file, *TYPES, "--schema", "analytics")
    assert more.returncode == 0, more.stderr
    (created,) = api.sent("POST")
    assert created.json()["schemas"] == {"analytics": {"version": "v2"}}
    assert len(read_secrets(secret_file)) == 2


def test_replace_list_and_remove_touch_only_the_types_asked_for(
    api: FakeVercel, secret_file: Path
) -> None:
    assert register(api, secret_file, *TYPES).returncode == 0
    log_id, trace_id, speed_id = (d["id"] for d in api.drains)
    api.requests.clear()
    replaced = register(api, secret_file, "--schema", "trace", "--replace")
    assert replaced.returncode == 0, replaced.stderr
    assert [r.path for r in api.sent("DELETE")] == [f"/v1/drains/{trace_id}"]
    assert [d["id"] for d in api.drains][:2] == [log_id, speed_id]
    assert types_of(api) == [["log"], ["speed_insights"], ["trace"]]
    listed = register(api, secret_file, "list", "--schema", "speed_insights")
    blocks = {block.split("id:", 1)[1].split()[0]: block for block in listed.stdout.split("\n\n")}
    assert "this receiver: yes" in blocks[speed_id]
    assert [drain_id for drain_id, block in blocks.items() if "this receiver: yes" in block] == [speed_id]
    assert log_id in blocks, "every drain is listed, this receiver's marked"
    refused = register(api, secret_file, "remove", speed_id)
    assert refused.returncode == 1 and "--schema" in refused.one_error_line()
    removed = register(api, secret_file, "remove", speed_id, "--schema", "speed_insights")
    assert removed.returncode == 0, removed.stderr
    assert speed_id not in [d["id"] for d in api.drains]


def test_bad_types_are_usage_errors(api: FakeVercel, secret_file: Path) -> None:
    for args in (["--schema", "metrics"], ["--schema", "trace", "--api", "integration"],
                 ["--schema", "trace", "--trace-encoding", "xml"]):
        run = register(api, secret_file, *args)
        assert run.returncode == 2, args
        assert "--schema" in run.one_error_line() or "--trace-encoding" in run.one_error_line()
    assert api.requests == []
