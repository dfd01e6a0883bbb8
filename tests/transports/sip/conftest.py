from __future__ import annotations

from pathlib import Path

import pytest

TORTURE_DIR = Path(__file__).resolve().parents[4] / "shared" / "testdata" / "rfc4475"
if not TORTURE_DIR.is_dir():  # a checkout beside /work/shared
    TORTURE_DIR = Path("/work/shared/testdata/rfc4475")


def torture(tag: str) -> bytes:
    return (TORTURE_DIR / f"{tag}.dat").read_bytes()


@pytest.fixture
def load() -> object:
    return torture
