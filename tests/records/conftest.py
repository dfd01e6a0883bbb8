"""The records tests run against SQLite and a real PostgreSQL server they start."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from .pg import PgCluster

_names = itertools.count(1)


@pytest.fixture(scope="session")
def pg() -> Iterator[PgCluster]:
    cluster = PgCluster()
    cluster.start()
    yield cluster
    cluster.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    """An empty database of each kind: SQLite in the test's dir, a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'calls.db'}"
    cluster: PgCluster = request.getfixturevalue("pg")
    if not cluster.running:
        cluster.start()
    return cluster.create_database(f"t{next(_names)}")
