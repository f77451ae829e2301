"""The store's schema version: an unversioned store (as 0.1.0 wrote it) is read and stamped, an
older one is migrated step by step, a newer one is refused untouched, also by `controller run`."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from hypetunnel.cli.main import app
from hypetunnel.store import schema
from hypetunnel.store.base import Store
from hypetunnel.store.memory import MemoryStore
from hypetunnel.store.sqlite import SqliteStore


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> schema.VersionedStore:
    s: schema.VersionedStore = (SqliteStore(tmp_path / "store.db") if request.param == "sqlite"
                                else MemoryStore())
    request.addfinalizer(s.close)
    return s


def test_an_unversioned_store_is_read_and_stamped(store: schema.VersionedStore) -> None:
    # What 0.1.0 leaves: documents and a revision, no version record.
    store.commit({"fabric": {"vni_range": [1000, 2000]}, "tenant/acme": {"name": "acme"}}, [])
    before = store.load()
    assert store.schema_version() is None
    assert schema.ensure(store) == 0
    assert store.schema_version() == schema.SCHEMA_VERSION
    assert store.load() == before  # no document and no revision moved
    assert schema.ensure(store) == schema.SCHEMA_VERSION  # the next start: nothing to do


def test_an_unversioned_sqlite_file_of_0_1_0_is_read(tmp_path: Path) -> None:
    """The file as 0.1.0 created it (its DDL: no schema row), opened by this code."""
    import sqlite3

    path = tmp_path / "store.db"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
        "mod_revision INTEGER NOT NULL);"
        "CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);"
        "INSERT INTO meta VALUES ('revision', 7);"
        "CREATE TABLE audit (key TEXT PRIMARY KEY, time REAL NOT NULL, tenant TEXT, "
        "doc TEXT NOT NULL);"
        "INSERT INTO kv VALUES ('tenant/acme', '{\"name\": \"acme\"}', 7);")
    db.commit()
    db.close()
    store = SqliteStore(path)
    try:
        assert schema.ensure(store) == 0
        assert store.schema_version() == schema.SCHEMA_VERSION
        snap = store.load()
        assert (snap.revision, snap.items) == (7, {"tenant/acme": {"name": "acme"}})
    finally:
        store.close()


def test_an_older_store_is_migrated_one_step_at_a_time(store: schema.VersionedStore) -> None:
    ran: list[int] = []

    def step(n: int) -> schema.Migration:
        def migrate(s: Store) -> None:
            assert s is store
            assert store.schema_version() == (n or None)  # runs before its stamp
            ran.append(n)
        return migrate

    assert store.stamp_schema(1, None)
    assert schema.ensure(store, current=4, migrations={n: step(n) for n in range(4)}) == 1
    assert ran == [1, 2, 3] and store.schema_version() == 4


def test_a_newer_store_is_refused_and_left_unchanged(store: schema.VersionedStore) -> None:
    store.commit({"tenant/acme": {"name": "acme"}}, [])
    assert store.stamp_schema(schema.SCHEMA_VERSION + 1, None)
    before = store.load()
    with pytest.raises(schema.SchemaTooNew, match=(
            f"the store's schema is version {schema.SCHEMA_VERSION + 1}, newer than this "
            "controller")):
        schema.ensure(store)
    assert store.load() == before and store.schema_version() == schema.SCHEMA_VERSION + 1


def test_a_stamp_is_a_compare_and_swap(store: schema.VersionedStore) -> None:
    assert store.stamp_schema(1, None)
    assert not store.stamp_schema(2, None)  # another controller stamped first
    assert store.stamp_schema(2, 1) and store.schema_version() == 2


def test_controller_run_refuses_a_newer_store_before_it_starts(tmp_path: Path) -> None:
    state = tmp_path / "state"
    s = SqliteStore(state / "store.db")
    assert s.stamp_schema(schema.SCHEMA_VERSION + 1, None)
    s.close()
    r = CliRunner().invoke(app, ["controller", "run", "--state-dir", str(state),
                                 "--api", "127.0.0.1:1", "--openflow", "tcp:127.0.0.1:0",
                                 "--log-format", "text"], env={"COLUMNS": "300"})
    assert r.exit_code == 1, r.output
    assert "error: the store's schema is version 2, newer than this controller" in r.output
    assert not (state / "admin.token").exists()  # nothing started: no bootstrap token


def test_a_rolling_upgrade_migrates_once_and_the_old_code_then_refuses_to_start(
        store: schema.VersionedStore) -> None:
    """The newer controller (here: one that knows a version SCHEMA_VERSION + 1) starts on the
    pair's older store and migrates it; its peer, upgraded next, finds nothing left to do; the
    old code restarted on it (a crash before its upgrade) refuses, untouched, with a clear error."""
    store.commit({"tenant/acme": {"name": "acme"}}, [])
    assert schema.ensure(store) == 0  # the old pair stamped it at its own version
    old, newer = schema.SCHEMA_VERSION, schema.SCHEMA_VERSION + 1
    ran: list[int] = []
    migrations = {**schema.MIGRATIONS, old: lambda s: ran.append(old)}
    assert schema.ensure(store, current=newer, migrations=migrations) == old
    assert ran == [old] and store.schema_version() == newer
    assert schema.ensure(store, current=newer, migrations=migrations) == newer
    assert ran == [old]  # the second new controller migrated nothing
    before = store.load()
    with pytest.raises(schema.SchemaTooNew, match=f"version {newer}, newer than this controller"):
        schema.ensure(store)
    assert store.load() == before and store.schema_version() == newer
