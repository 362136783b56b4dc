"""The README's DuckDB example, run as written against moto's S3 server.

The SQL is taken from README.md between the `duckdb-example` markers, so the doc and this test
cannot drift. DuckDB's httpfs extension is on PyPI (`duckdb-extension-httpfs`) only up to 1.5.5
while the project uses duckdb 2.x, so the example runs in a throwaway venv made for this module
with `duckdb==1.5.5 duckdb-extension-httpfs==1.5.5`; `INSTALL httpfs` (a download at run time)
becomes a `LOAD` of the package's file, and the placeholders become the test's bucket, endpoint
and dummy keys. Without a package index the test skips outside CI and fails in it.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from receiver.archive.keys import ArchiveTarget, object_key
from receiver.archive.store import upload
from tests.support import REPO_ROOT, free_port
from tests.test_archive import s3_client, s3_server

sys.path.insert(0, str(REPO_ROOT / "bench"))
from gen import RecordFactory, dump_record

DUCKDB = ("duckdb==1.5.5", "duckdb-extension-httpfs==1.5.5")
BUCKET, PREFIX = "readme-duckdb", "vercel/prod"
DAY = "2026-12-02"
RUNNER = """
import json, sys
import duckdb
connection = duckdb.connect(config={"autoinstall_known_extensions": False,
                                    "autoload_known_extensions": False})
rows = []
for statement in sys.stdin.read().split(";"):
    if statement.strip():
        rows = connection.execute(statement).fetchall()
print(json.dumps(rows, default=str))
"""


def readme_sql() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    match = re.search(r"<!-- duckdb-example:start -->\n```sql\n(.*?)```\n<!-- duckdb-example:end -->",
                      text, re.S)
    assert match, "README.md lost its duckdb-example block"
    return match.group(1)


@pytest.fixture(scope="module")
def duckdb_python(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A venv's python with duckdb 1.5.5 and its httpfs package; and the extension's file."""
    venv = tmp_path_factory.mktemp("duckdb-venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    result = subprocess.run([str(python), "-m", "pip", "install", "-q", *DUCKDB],
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        message = f"cannot install {' '.join(DUCKDB)}: {result.stderr.strip().splitlines()[-1:]}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    (extension,) = venv.glob("lib/python*/site-packages/duckdb_extension_httpfs/**/httpfs.duckdb_extension")
    return python, extension


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """moto with objects put as the uploader puts them: two hours of DAY and one of the day
    before (which the query's `date` filter leaves out); (port, the records of DAY)."""
    port = free_port()
    with s3_server(port) as endpoint:
        s3 = s3_client(endpoint, tmp_path_factory.mktemp("aws"))
        s3.create_bucket(Bucket=BUCKET)
        kept: list[dict[str, Any]] = []
        for seed, (day, hour) in enumerate([(DAY, 13), (DAY, 14), ("2026-12-01", 23)]):
            start = datetime.fromisoformat(f"{day}T{hour:02d}:00:00+00:00").astimezone(UTC)
            factory = RecordFactory(seed)
            factory.clock_ms = int(start.timestamp() * 1000)
            lines = [dump_record(factory.record()) for _ in range(300)]
            name = f"logs-{day.replace('-', '')}T{hour:02d}5959.000000Z.ndjson.gz"
            key = object_key(PurePosixPath("logs", day, name), "{stream}/{date}", PREFIX, "pod-a")
            data = gzip.compress(b"".join(line + b"\n" for line in lines))
            upload(s3, io.BytesIO(data), len(data), ArchiveTarget(BUCKET, PREFIX), key)
            if day == DAY:
                kept += [{**json.loads(line), "hour": hour} for line in lines]
        yield port, kept


def test_the_readme_duckdb_example_reads_the_bucket(
        duckdb_python: tuple[Path, Path], archive: tuple[int, list[dict[str, Any]]]) -> None:
    python, extension = duckdb_python
    port, records = archive
    sql = readme_sql()
    replacements = {
        "INSTALL httpfs;\nLOAD httpfs;": f"LOAD '{extension}';",
        "'YOUR_KEY_ID'": "'testing'",
        "'YOUR_SECRET'": "'testing'",
        "minio.example.com:9000": f"127.0.0.1:{port}",
        "USE_SSL true": "USE_SSL false",
        "acme-logs/vercel/prod": f"{BUCKET}/{PREFIX}",
    }
    for old, new in replacements.items():
        assert old in sql, f"the README's example no longer holds {old!r}"
        sql = sql.replace(old, new)
    result = subprocess.run([str(python), "-c", RUNNER], input=sql, capture_output=True, text=True,
                            timeout=120, env={**os.environ, "HOME": str(python.parent.parent)})
    assert result.returncode == 0, result.stderr
    rows = [tuple(row) for row in json.loads(result.stdout)]

    counts = Counter((r["hour"], r["level"]) for r in records)
    errors = Counter((r["hour"], r["level"]) for r in records
                     if isinstance(r.get("statusCode"), int) and r["statusCode"] >= 500)
    expected = [(hour, level, n, errors[(hour, level)]) for (hour, level), n in sorted(counts.items())]
    assert rows == expected
    assert sum(row[2] for row in rows) == 600  # the day before is left out by its key's date
