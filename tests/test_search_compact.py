"""Parquet twins (`drain-receiver compact`) over files written by a real receiver.

The receiver rotates at 64 KiB, so the data holds many compressed files; the compactor runs as
its own process, as it does beside the page. Every search through twins must give back every
record exactly once and byte for byte.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from receiver.search.engine import TABLE_COLUMNS, VIEW_COLUMNS, open_engine
from receiver.search.filters import Filters
from receiver.search.snapshot import COMPRESSED, PARQUET_KIND, PARTIAL_TWIN, TWIN
from tests.support import REPO_ROOT, Receiver, free_port, running_receiver
from tests.test_search import ENV, make_records, post

RAW = TABLE_COLUMNS.index("raw")


def run_cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "receiver", *args], cwd=REPO_ROOT,
                          capture_output=True, timeout=120)


def searched(root: Path) -> list[bytes]:
    result = run_cli("search", "--dir", str(root), "--format", "ndjson", "--limit", "1000000")
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def twins(root: Path) -> list[Path]:
    return sorted(root.rglob("*" + TWIN))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Receiver, list[bytes]]]:
    workdir = tmp_path_factory.mktemp("compact")
    root = workdir / "data"
    args = ["--sink", "file", "--dir", str(root), "--max-file-bytes", "64KiB"]
    sent = make_records(1500, 11, int(time.time() * 1000) - 3600 * 1000)
    with running_receiver(workdir, args, env=ENV) as receiver:
        for start in range(0, len(sent), 100):
            post(receiver, sent[start : start + 100])
        deadline = time.monotonic() + 20
        while list(root.rglob("logs-*Z.ndjson")) and time.monotonic() < deadline:
            time.sleep(0.05)
        result = run_cli("compact", "--dir", str(root))
        assert result.returncode == 0, result.stderr
        yield root, receiver, sent


def test_every_compressed_file_gets_a_twin_and_searches_read_it(
    data: tuple[Path, Receiver, list[bytes]],
) -> None:
    root, _, _ = data
    compressed = sorted(root.rglob("*" + COMPRESSED))
    assert len(compressed) > 5
    assert [p.name[: -len(COMPRESSED)] for p in compressed] == [p.name[: -len(TWIN)] for p in twins(root)]
    with open_engine(root) as engine:
        kinds = {opened.path.name: opened.kind for opened in engine.snapshot.files}
    assert all(kinds.get(twin.name) == PARQUET_KIND for twin in twins(root))
    assert not any(name.endswith(COMPRESSED) for name in kinds)


def test_a_twin_holds_its_gzip_lines_byte_for_byte(data: tuple[Path, Receiver, list[bytes]]) -> None:
    root, _, _ = data
    for twin in twins(root):
        archived = gzip.decompress(twin.with_name(twin.name[: -len(TWIN)] + COMPRESSED).read_bytes())
        rows = duckdb.sql(f"SELECT raw FROM read_parquet('{twin}')").fetchall()
        assert sorted(raw.encode() for (raw,) in rows) == sorted(archived.splitlines())


def test_search_through_twins_finds_every_record_once_byte_for_byte(
    data: tuple[Path, Receiver, list[bytes]],
) -> None:
    root, _, sent = data
    found = searched(root)
    assert len(found) == len(set(found)), "a record was read twice"
    assert sorted(found) == sorted(sent)


def view_rows(root: Path) -> list[tuple[object, ...]]:
    columns = ", ".join(f'"{c}"' for c in VIEW_COLUMNS)
    with open_engine(root) as engine:
        return sorted(engine.rows(f"SELECT {columns} FROM logs")[1], key=repr)


def test_every_column_of_the_view_reads_the_same_through_twins_as_from_the_gzip(
    data: tuple[Path, Receiver, list[bytes]], tmp_path: Path,
) -> None:
    root, _, _ = data
    through_twins = view_rows(root)
    moved = [(twin, tmp_path / twin.name) for twin in twins(root)]
    for twin, aside in moved:
        shutil.move(twin, aside)
    try:
        from_gzip = view_rows(root)
    finally:
        for twin, aside in moved:
            shutil.move(aside, twin)
    assert len(from_gzip) == len(through_twins) > 1000
    assert from_gzip == through_twins
    message_lower = VIEW_COLUMNS.index("message_lower")
    assert any(row[message_lower] for row in through_twins)


def test_a_twin_of_an_older_column_set_is_never_read_and_is_removed(
    data: tuple[Path, Receiver, list[bytes]],
) -> None:
    root, _, sent = data
    twin = twins(root)[0]
    old = twin.with_name(twin.name[: -len(TWIN)] + ".ndjson.v1.parquet")
    duckdb.sql(f"COPY (SELECT 1 AS x) TO '{old}' (FORMAT parquet)")
    assert sorted(searched(root)) == sorted(sent)
    result = run_cli("compact", "--dir", str(root))
    assert result.returncode == 0, result.stderr
    assert not old.exists()
    assert twin.exists()


def test_half_written_and_orphaned_twins_are_never_read(
    data: tuple[Path, Receiver, list[bytes]],
) -> None:
    root, _, sent = data
    twin = twins(root)[0]
    half = twin.with_name(twin.name[: -len(TWIN)] + PARTIAL_TWIN)
    half.write_bytes(twin.read_bytes()[: twin.stat().st_size // 2])
    orphan = twin.with_name("logs-20200101T000000.000000Z" + TWIN)
    shutil.copyfile(twin, orphan)
    try:
        assert sorted(searched(root)) == sorted(sent)
    finally:
        half.unlink()
    result = run_cli("compact", "--dir", str(root))
    assert result.returncode == 0, result.stderr
    assert not orphan.exists(), "a twin whose .gz is gone was kept"


def test_a_twin_deleted_at_any_time_falls_back_to_its_gzip(
    data: tuple[Path, Receiver, list[bytes]],
) -> None:
    root, _, sent = data
    twin = twins(root)[-1]
    kept = twin.read_bytes()
    twin.unlink()
    try:
        assert sorted(searched(root)) == sorted(sent)
    finally:
        twin.write_bytes(kept)


def test_records_are_neither_missed_nor_doubled_while_files_rotate_compress_and_compact(
    data: tuple[Path, Receiver, list[bytes]],
) -> None:
    """A writer keeps posting (rotating every 64 KiB) and the compactor keeps writing twins
    while searches run: each search holds every record acknowledged before it, exactly once."""
    root, receiver, _ = data
    acknowledged: list[bytes] = []
    lock = threading.Lock()
    stop = threading.Event()

    def write() -> None:
        seed = 2000
        while not stop.is_set():
            seed += 1
            lines = make_records(50, seed, int(time.time() * 1000))
            post(receiver, lines)
            with lock:
                acknowledged.extend(lines)

    before_twins = len(twins(root))
    compactor = subprocess.Popen([sys.executable, "-m", "receiver", "compact", "--dir", str(root),
                                  "--watch", "0.1"], cwd=REPO_ROOT, stderr=subprocess.DEVNULL)
    writer = threading.Thread(target=write)
    writer.start()
    try:
        searches, deadline = 0, time.monotonic() + 60
        while searches < 10 or (len(twins(root)) == before_twins and time.monotonic() < deadline):
            searches += 1
            with lock:
                before = set(acknowledged)
            with open_engine(root) as engine:
                found = [row[RAW].encode() for row in engine.search(Filters(), limit=10**7)]
            assert len(found) == len(set(found)), "a record was read twice"
            assert before <= set(found), f"{len(before - set(found))} acknowledged records missed"
    finally:
        stop.set()
        writer.join()
        compactor.terminate()
        assert compactor.wait(timeout=30) == 0, "the compactor did not stop cleanly on SIGTERM"
    assert len(acknowledged) > 400
    assert len(twins(root)) > before_twins, "no twin was written while the searches ran"


def test_the_page_compacts_beside_itself_and_its_compactor_dies_with_it(
    data: tuple[Path, Receiver, list[bytes]], tmp_path: Path,
) -> None:
    root, _, _ = data
    archive = sorted(root.rglob("*" + COMPRESSED))[0]
    (tmp_path / "logs").mkdir()
    shutil.copyfile(archive, tmp_path / "logs" / archive.name)
    ui = subprocess.Popen([sys.executable, "-m", "receiver", "ui", "--dir", str(tmp_path),
                           "--port", str(free_port())], cwd=REPO_ROOT, stderr=subprocess.DEVNULL,
                          env={**os.environ, "DRAIN_UI_TOKEN": "compact-ui-token-0123456789abcdef"})
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.rglob("*" + TWIN)):
            assert time.monotonic() < deadline, "the page's compactor wrote no twin"
            time.sleep(0.1)
        children = Path(f"/proc/{ui.pid}/task/{ui.pid}/children").read_text().split()
        assert len(children) == 1
    finally:
        ui.kill()
        ui.wait()
    compactor = Path(f"/proc/{children[0]}")
    deadline = time.monotonic() + 10
    while compactor.exists() and (compactor / "stat").read_text().split()[2] != "Z":
        assert time.monotonic() < deadline, "the compactor outlived its page (killed by SIGKILL)"
        time.sleep(0.1)


def test_compact_on_a_missing_directory_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = run_cli("compact", "--dir", str(tmp_path / "missing"))
    assert result.returncode == 2
    assert result.stderr.decode().strip() == (
        f"drain-receiver compact: {tmp_path / 'missing'} is not a directory (give the receiver's --dir)")
