"""Shared fixtures: test data locations and a guard against leaked tasks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pytest

if TYPE_CHECKING:
    from .providers.fake_vendors import FakeVendors

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
TESTDATA = SHARED / "testdata" if (SHARED / "testdata").is_dir() else ROOT / "tests" / "data"
POCKETSPHINX = Path("/usr/share/pocketsphinx/test/data")


@pytest.fixture
def testdata() -> Path:
    if not TESTDATA.is_dir():
        pytest.fail(f"test data not found at {TESTDATA}: ../shared/testdata must sit beside the repo")
    return TESTDATA


@pytest.fixture
def speech_dir() -> Path:
    if not POCKETSPHINX.is_dir():
        pytest.fail(
            f"{POCKETSPHINX} missing: real recorded speech comes from "
            "`apt-get install pocketsphinx-testdata` (part of the test install)"
        )
    return POCKETSPHINX


@pytest.fixture
async def no_leaked_tasks():
    """Fail the test if it leaves tasks running on the loop."""
    before = asyncio.all_tasks()
    yield
    await asyncio.sleep(0)
    current = asyncio.current_task()
    leaked = [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]
    assert not leaked, f"tasks left behind: {[t.get_name() for t in leaked]}"


@pytest.fixture
async def vendors() -> AsyncIterator["FakeVendors"]:
    """Local servers speaking the vendors' wire formats (tests/providers/fake_vendors.py)."""
    from .providers.fake_vendors import FakeVendors

    v = FakeVendors()
    await v.start()
    yield v
    await v.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    s = aiohttp.ClientSession()
    yield s
    await s.close()
