"""Where a subscriber keeps its stream cursor between runs: a small file written
atomically (temp file, fsync, rename), or a SQLite database when the path ends in
``.sqlite``/``.sqlite3``/``.db``."""

from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path

SQLITE_SUFFIXES = (".sqlite", ".sqlite3", ".db")


class CursorStore:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @property
    def _sqlite(self) -> bool:
        return self.path.suffix in SQLITE_SUFFIXES

    def load(self) -> str | None:
        if self._sqlite:
            if not self.path.exists():
                return None
            with sqlite3.connect(self.path) as db:
                db.execute("CREATE TABLE IF NOT EXISTS cursor (id INTEGER PRIMARY KEY, value TEXT)")
                row = db.execute("SELECT value FROM cursor WHERE id = 1").fetchone()
            return None if row is None else str(row[0])
        try:
            text = self.path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return text or None

    def save(self, value: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._sqlite:
            with sqlite3.connect(self.path) as db:
                db.execute("CREATE TABLE IF NOT EXISTS cursor (id INTEGER PRIMARY KEY, value TEXT)")
                db.execute("INSERT OR REPLACE INTO cursor (id, value) VALUES (1, ?)", (value,))
            return
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name + ".")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(value)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
