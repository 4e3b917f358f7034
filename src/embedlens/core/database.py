"""One dataset's SQLite file: connection settings, tables, transactions and the field schema."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import zlib
from pathlib import Path
from typing import Any, Iterator

from .fields import BUILTIN_FIELDS, FIELD_TYPES, check_name, sql_type
from .errors import InvalidInputError

SCHEMA_VERSION = 1

_TABLES = """
CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS fields (
    name TEXT PRIMARY KEY, type TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS samples (
    _rowid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    filepath TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '[]',
    metadata TEXT,
    media_realpath TEXT);
CREATE INDEX IF NOT EXISTS samples_filepath ON samples(filepath);
CREATE TABLE IF NOT EXISTS saved_views (
    name TEXT PRIMARY KEY, stages TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY, type TEXT NOT NULL, method TEXT, config TEXT NOT NULL, view TEXT NOT NULL,
    fields TEXT NOT NULL DEFAULT '[]', arrays TEXT NOT NULL DEFAULT '[]', results TEXT,
    created_at REAL NOT NULL, updated_at REAL NOT NULL);
"""


# The file a sample's filepath resolved to when it was written (symlinks followed): the app serves a
# sample's image only while its path still resolves there, so re-pointing a link inside a dataset's
# folder at another file does not publish that file. add_samples() writes the column; this trigger
# keeps it with any later change of filepath, whichever code makes it.
_MEDIA_TRIGGER = """
CREATE TRIGGER IF NOT EXISTS samples_media_realpath AFTER UPDATE OF filepath ON samples
WHEN NEW.filepath IS NOT OLD.filepath BEGIN
    UPDATE samples SET media_realpath = el_realpath(NEW.filepath) WHERE _rowid = NEW._rowid;
END"""


def media_realpath(path: str) -> str:
    return os.path.realpath(path)


def _seeded_rank(seed: Any, key: str) -> int:
    """A deterministic pseudo-random rank, so shuffle(seed) and take(n, seed) reproduce across processes."""
    return zlib.crc32(f"{seed}:{key}".encode())


class Database:
    """A connection to ``dataset.db`` with the settings every dataset uses.

    WAL mode lets other processes read while one writes, and a write is visible to them as soon as it
    commits. Every multi-row write goes through :meth:`transaction`, so a failure or a kill leaves the
    file as it was before the write.
    """

    def __init__(self, path: Path, create: bool = False) -> None:
        if not create and not path.exists():
            raise FileNotFoundError(f"no dataset file at {path}")
        self.path = path
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self._lock = threading.RLock()
        self._depth = 0
        self._schema: dict[str, str] | None = None
        self._schema_version = -1
        self._attrs_seen: set[tuple[str, str]] = set()
        c = self._conn
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=NORMAL")
        c.execute("PRAGMA foreign_keys=ON")
        c.execute("PRAGMA cache_size=-65536")
        c.execute("PRAGMA temp_store=MEMORY")
        c.create_function("seeded_rank", 2, _seeded_rank, deterministic=True)
        c.create_function("el_realpath", 1, media_realpath)
        if create:
            with self.transaction():
                for stmt in filter(str.strip, _TABLES.split(";")):
                    c.execute(stmt)
                c.execute(_MEDIA_TRIGGER)
                c.execute("INSERT OR IGNORE INTO info VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        else:
            self._upgrade()

    def _upgrade(self) -> None:
        """Bring a dataset written by an older embedlens up to date (each step runs once)."""
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(samples)")}
        if "media_realpath" not in columns:
            # Recorded now, as the files resolve today: from here on a re-pointed link is noticed.
            with self.transaction():
                self._conn.execute("ALTER TABLE samples ADD COLUMN media_realpath TEXT")
                self._conn.execute("UPDATE samples SET media_realpath = el_realpath(filepath)")
                self._conn.execute(_MEDIA_TRIGGER)

    def close(self) -> None:
        self._conn.close()

    # ------------------------------------------------------------------ statements

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._conn.execute(sql, params)

    def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
        with self._lock:
            return self._conn.executemany(sql, rows)

    def fetchall(self, sql: str, params: Any = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def scalar(self, sql: str, params: Any = ()) -> Any:
        row = self.fetchall(sql, params)
        return row[0][0] if row else None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All writes inside happen together or not at all; nested calls join the outer transaction."""
        with self._lock:
            if self._depth == 0:
                self._conn.execute("BEGIN IMMEDIATE")
            self._depth += 1
            try:
                yield self._conn
            except BaseException:
                self._depth -= 1
                if self._depth == 0:
                    self._conn.execute("ROLLBACK")
                    self._schema = None  # DDL may have been rolled back
                raise
            else:
                self._depth -= 1
                if self._depth == 0:
                    self._conn.execute("COMMIT")

    # ------------------------------------------------------------------ key/value info

    def get_info(self, key: str, default: str | None = None) -> str | None:
        v = self.scalar("SELECT value FROM info WHERE key = ?", (key,))
        return default if v is None else v

    def set_info(self, key: str, value: str) -> None:
        with self.transaction():
            self.execute("INSERT OR REPLACE INTO info VALUES (?, ?)", (key, value))

    # ------------------------------------------------------------------ field schema

    def schema(self) -> dict[str, str]:
        """Field name -> type, built-in fields first, in creation order; re-read when another process wrote."""
        with self._lock:
            version = self._conn.execute("PRAGMA data_version").fetchone()[0]
            if self._schema is None or version != self._schema_version:
                rows = self._conn.execute("SELECT name, type FROM fields ORDER BY created_at, name").fetchall()
                self._schema = {**BUILTIN_FIELDS, **dict(rows)}
                self._schema_version = version
            return dict(self._schema)

    def has_label_attribute(self, field: str, attr: str) -> bool:
        """Whether any label of ``field`` has the free-form attribute ``attr``; one scan that stops at the
        first label found. Found attributes are remembered (labels seldom lose one)."""
        if (field, attr) in self._attrs_seen:
            return True
        check_name(field)
        if self.schema().get(field) == "Detections":
            sql = (f'SELECT 1 FROM samples AS t, json_each(t."{field}", \'$.detections\') AS d '
                   f"WHERE json_type(d.value, ?) IS NOT NULL LIMIT 1")
        else:
            sql = f'SELECT 1 FROM samples WHERE json_type("{field}", ?) IS NOT NULL LIMIT 1'
        found = self.scalar(sql, (f"$.{check_name(attr)}",)) is not None
        if found:
            self._attrs_seen.add((field, attr))
        return found

    def add_field(self, name: str, ftype: str) -> None:
        check_name(name)
        if ftype not in FIELD_TYPES:
            raise InvalidInputError(f"unknown field type {ftype!r}; one of {', '.join(FIELD_TYPES)}")
        if name in self.schema():
            raise InvalidInputError(f"field {name!r} already exists")
        with self.transaction():
            self.execute(f'ALTER TABLE samples ADD COLUMN "{name}" {sql_type(ftype)}')
            self.execute("INSERT INTO fields VALUES (?, ?, ?)", (name, ftype, time.time()))
            self._schema = None

    def delete_field(self, name: str) -> None:
        with self.transaction():
            for (index,) in self.fetchall(
                    "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='samples' AND sql LIKE ?",
                    (f'%"{name}"%',)):
                self.execute(f'DROP INDEX "{index}"')
            self.execute(f'ALTER TABLE samples DROP COLUMN "{name}"')
            self.execute("DELETE FROM fields WHERE name = ?", (name,))
            self._schema = None

    def rename_field(self, old: str, new: str) -> None:
        check_name(new)
        with self.transaction():
            self.execute(f'ALTER TABLE samples RENAME COLUMN "{old}" TO "{new}"')
            self.execute("UPDATE fields SET name = ? WHERE name = ?", (new, old))
            self._schema = None
