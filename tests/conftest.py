"""Fixtures shared by the register.py tests: the fake Vercel API and a secret file path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_vercel import FakeVercel, fake_vercel


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeVercel]:
    with fake_vercel() as server:
        yield server


@pytest.fixture
def api(fake: FakeVercel) -> FakeVercel:
    fake.reset()
    return fake


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    return tmp_path / "state" / "drain-secret"
