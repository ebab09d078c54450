"""Django's SQLite backend with the writers of one process taking turns (``ENGINE: web.db.sqlite3``).

SQLite lets one connection write at a time. A writer that finds the file locked is put to sleep by SQLite's busy
handler in growing steps (1, 2, 5, 10 ... 100 ms) and does not wake when the lock is freed: a commit that needs
0.3 ms waits 1-40 ms whenever two threads write at once, which in a courier they do all the time (its store lanes,
its senders' claims and records). Here the threads of a process that write to one database file queue on a lock of
this process first, which hands the turn over as soon as the holder's transaction ends; SQLite's busy handler is
left with the writers of other processes.

A turn is taken before a statement that writes (or ``BEGIN``: with ``transaction_mode: IMMEDIATE`` every transaction
writes) and given back once the connection is outside a transaction: after that statement in autocommit, else at
commit, rollback or close. A thread that waits longer than the connection's ``timeout`` gets SQLite's own error,
``database is locked``, as it would have from SQLite. Reads never wait (WAL readers do not block). Nothing else of
Django's backend changes.
"""

from __future__ import annotations

import threading

from django.db.backends.sqlite3 import base

_WRITES = frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE", "BEGIN", "CREATE", "DROP", "ALTER"})
_turns: dict[str, threading.Lock] = {}
_turns_lock = threading.Lock()


def turn_for(name: str) -> threading.Lock:
    """The one lock of this process for writers of database file ``name`` (asked twice per write: a plain read once
    it exists)."""
    turn = _turns.get(name)
    if turn is None:
        with _turns_lock:
            turn = _turns.setdefault(str(name), threading.Lock())
    return turn


def writes(sql: str) -> bool:
    """Does ``sql`` write (or open a transaction)? Decided on its first word."""
    return sql.lstrip()[:7].split(None, 1)[0].upper() in _WRITES if sql.strip() else False


class TurnCursor(base.SQLiteCursorWrapper):
    """Takes its connection's turn for a statement that writes. A write with results (``RETURNING``) outside a
    transaction holds SQLite's lock until its last row is read, so its rows are read at once, inside the turn, and
    handed out from here."""

    db: DatabaseWrapper
    _rows: list | None = None

    def execute(self, query, params=None):
        return self._run(super().execute, query, params)

    def executemany(self, query, param_list):
        return self._run(super().executemany, query, param_list)

    def _run(self, run, query, params):
        self._rows = None
        if not writes(query):
            return run(query, params)
        self.db.take_turn()
        try:
            run(query, params)
            if self.description is not None and not self.connection.in_transaction:
                self._rows = super().fetchall()  # the statement ends here (and commits)
            return self
        finally:
            self.db.end_turn_outside_transaction()

    def fetchone(self):
        if self._rows is None:
            return super().fetchone()
        return self._rows.pop(0) if self._rows else None

    def fetchmany(self, size=None):
        if self._rows is None:
            return super().fetchmany(self.arraysize if size is None else size)
        size = self.arraysize if size is None else size
        taken, self._rows = self._rows[:size], self._rows[size:]
        return taken

    def fetchall(self):
        if self._rows is None:
            return super().fetchall()
        taken, self._rows = self._rows, []
        return taken

    def __next__(self):
        if self._rows is None:
            return super().__next__()
        if not self._rows:
            raise StopIteration
        return self._rows.pop(0)


class DatabaseWrapper(base.DatabaseWrapper):
    _holds_turn = False

    def create_cursor(self, name=None):
        cursor = self.connection.cursor(factory=TurnCursor)
        cursor.db = self
        return cursor

    def take_turn(self) -> None:
        """Wait for this process's turn to write (unless this connection has it already)."""
        if self._holds_turn:
            return
        timeout = self.settings_dict.get("OPTIONS", {}).get("timeout", 5)
        if not turn_for(self.settings_dict["NAME"]).acquire(timeout=timeout):
            raise base.Database.OperationalError(
                f"database is locked (another writer of this process held it for {timeout} s)"
            )
        self._holds_turn = True

    def end_turn_outside_transaction(self) -> None:
        if self._holds_turn and not (self.connection is not None and self.connection.in_transaction):
            self._give_turn_back()

    def _give_turn_back(self) -> None:
        self._holds_turn = False
        turn_for(self.settings_dict["NAME"]).release()

    def _commit(self):
        try:
            return super()._commit()
        finally:
            self.end_turn_outside_transaction()

    def _rollback(self):
        try:
            return super()._rollback()
        finally:
            self.end_turn_outside_transaction()

    def _close(self):
        try:
            return super()._close()
        finally:
            if self._holds_turn:  # a closed connection holds no transaction
                self._give_turn_back()
