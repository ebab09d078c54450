"""The durable outbox: every state change of a Message is one write to the database, made here and only here.

Sync functions over the Django ORM. Intake records a message (idempotently, by its key); senders
``claim`` a due message with a lease, then record ``sent``, ``retry`` or ``dead``. A sweep finds
messages that are due, or whose lease ran out because their sender died mid-send.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import DataError, IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from messaging.core.redact import mask_key, scrub
from messaging.core.types import CombinedMessage, Direction, Protocol, Status
from web.delivery.models import Message

log = logging.getLogger("messaging.outbox.store")

KEY_LENGTH = Message._meta.get_field("idempotency_key").max_length
DUE_STATUSES = (Status.RECEIVED, Status.QUEUED, Status.FAILED)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    max_age: timedelta = timedelta(days=3)
    base_delay: float = 2.0
    max_delay: float = 900.0
    lease: timedelta = timedelta(seconds=120)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Exponential backoff with full jitter, in seconds, for the ``attempt``-th failure (1-based)."""
        rng = rng or random
        ceiling = min(self.max_delay, self.base_delay * (2 ** max(attempt - 1, 0)))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)

    @classmethod
    def from_config(cls, config) -> RetryPolicy:
        return cls(
            max_attempts=config.outbox_max_attempts,
            max_age=timedelta(hours=config.outbox_max_age_hours),
            base_delay=config.outbox_base_delay,
            max_delay=config.outbox_max_delay,
            lease=timedelta(seconds=config.outbox_lease_seconds),
        )


DEFAULT_POLICY = RetryPolicy()


@dataclass(frozen=True)
class Recorded:
    message_id: int
    status: str
    created: bool  # False: the idempotency key was seen before; nothing new was stored
    reason: str = ""


def _row_fields(msg: CombinedMessage) -> dict:
    return {
        "direction": msg.direction.value,
        "protocol": msg.protocol.key,
        "sender": msg.sender[:320],
        "recipient": msg.recipient[:320],
        "subject": msg.subject[:255],
        "text": msg.text,
        "external_id": msg.external_id[:255],
        "authentication": msg.authentication[:500],
        "latitude": msg.latitude,
        "longitude": msg.longitude,
        "location_cep_km": msg.location_cep_km,
    }


def record(
    msg: CombinedMessage, *, user_id: int | None, device_id: int | None, accepted: bool, reason: str = ""
) -> Recorded:
    """Store an inbound message once. Accepted: status ``received`` (due now); else ``rejected``."""
    status = Status.RECEIVED if accepted else Status.REJECTED
    existing = Message.objects.filter(idempotency_key=msg.idempotency_key).values("id", "status").first()
    if existing:
        return Recorded(existing["id"], existing["status"], created=False)
    try:
        with transaction.atomic():
            row = Message.objects.create(
                idempotency_key=msg.idempotency_key,
                user_id=user_id,
                device_id=device_id,
                status=status,
                last_error=reason,
                next_attempt_at=timezone.now() if accepted else None,
                **_row_fields(msg),
            )
    except IntegrityError:  # another actor stored the same key just now
        row = Message.objects.get(idempotency_key=msg.idempotency_key)
        return Recorded(row.id, row.status, created=False)
    log.info("message %s %s key=%s %s", row.id, status, mask_key(msg.idempotency_key), reason)
    return Recorded(row.id, status, created=True, reason=reason)


@dataclass(frozen=True)
class ToRecord:
    """One message for ``record_many``: who it is for and whether it was accepted."""

    msg: CombinedMessage
    user_id: int | None
    device_id: int | None
    accepted: bool
    reason: str = ""


def record_many(items: list[ToRecord]) -> list[Recorded]:
    """``record`` for a batch, in one transaction (one commit, one fsync); results in the same order.

    A key seen before (or twice in the batch) stores nothing new. If another transaction stores one of
    the keys at the same moment (possible on PostgreSQL), the batch falls back to ``record`` one by one.
    """
    if not items:
        return []
    first: dict[str, ToRecord] = {}
    for item in items:  # the first of a key twice in the batch is the one stored
        first.setdefault(item.msg.idempotency_key, item)
    try:
        # The usual batch is all new keys: one INSERT, no read first. A key stored before makes it fail whole
        # (rolled back), and the batch is stored again, reading which of its keys are known.
        rows = [_new_row(item) for item in first.values()]
        with _atomic_unless_one_statement(rows):
            rows = insert_rows(rows)
    except IntegrityError:
        return _record_many_known_first(items)
    except ITEM_ERRORS as exc:  # one item the database refuses must not fail its neighbours
        log.warning("batch of %d not stored (%s); recording one by one", len(items), type(exc).__name__)
        return [_record_one(item) for item in items]
    return _results(items, {}, {row.idempotency_key: row for row in rows})


def _record_many_known_first(items: list[ToRecord]) -> list[Recorded]:
    """``record_many`` for a batch with keys stored before: those are read first and not stored again."""
    keys = {item.msg.idempotency_key for item in items}
    try:
        with transaction.atomic():
            known = {
                key: Recorded(mid, status, created=False)
                for key, mid, status in Message.objects.filter(idempotency_key__in=keys).values_list(
                    "idempotency_key", "id", "status"
                )
            }
            fresh: dict[str, Message] = {}
            for item in items:
                key = item.msg.idempotency_key
                if key not in known and key not in fresh:
                    fresh[key] = _new_row(item)
            insert_rows(list(fresh.values()))
    except IntegrityError:
        log.info("batch of %d raced another writer on a key; recording one by one", len(items))
        return [_record_one(item) for item in items]
    except ITEM_ERRORS as exc:  # one item the database refuses must not fail its neighbours
        log.warning("batch of %d not stored (%s); recording one by one", len(items), type(exc).__name__)
        return [_record_one(item) for item in items]
    return _results(items, known, fresh)


def _results(items: list[ToRecord], known: dict[str, Recorded], fresh: dict[str, Message]) -> list[Recorded]:
    """One result per item, in order: a known key's row, or the row just stored (logged once)."""
    results = []
    for item in items:
        key = item.msg.idempotency_key
        if key in known:
            results.append(known[key])
            continue
        row = fresh[key]
        known[key] = Recorded(row.id, row.status, created=False)
        log.info("message %s %s key=%s %s", row.id, row.status, mask_key(key), item.reason)
        results.append(Recorded(row.id, row.status, created=True, reason=item.reason))
    return results


# What one item's data can make a write raise (a value the column or the driver refuses). Anything else - the
# database away, locked, out of connections - is the database's trouble: it is raised, and the caller answers
# "try again later".
ITEM_ERRORS = (DataError, ValueError)


def _record_one(item: ToRecord) -> Recorded:
    """``record`` for one item of a batch; an item that cannot be stored as it is becomes a dead letter."""
    try:
        return record(
            item.msg, user_id=item.user_id, device_id=item.device_id, accepted=item.accepted, reason=item.reason
        )
    except ITEM_ERRORS as exc:
        msg = item.msg
        return record_dead_letter(
            _fits_key(msg.idempotency_key),
            sender=msg.sender,
            raw=msg.text,
            reason=f"could not be stored: {type(exc).__name__}: {str(exc)[:300]}",
            device_id=item.device_id,
            user_id=item.user_id,
            direction=msg.direction,
            protocol=msg.protocol,
        )


def _fits_key(key: str) -> str:
    """The key as stored: itself when it fits the column, else a digest of it (stable, so a retry finds it)."""
    if len(key) <= KEY_LENGTH and key.isascii():
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _atomic_unless_one_statement(rows: list[Message]):
    """The transaction around ``insert_rows(rows)``: none when that is one INSERT (see ``_atomic_unless``), else
    ``atomic()``, inside another transaction a savepoint, so that a key stored before (``IntegrityError``) leaves
    the caller's transaction usable."""
    db = transaction.get_connection()
    if not db.features.can_return_rows_from_bulk_insert:  # bulk_create's way: maybe several statements
        return transaction.atomic()
    return _atomic_unless(len(rows) <= _rows_per_statement(db, rows))


def _atomic_unless(one_statement: bool):
    """``atomic()``, or none for one statement on a connection in autocommit: one statement is atomic by itself,
    and Django's BEGIN, COMMIT and their bookkeeping cost more CPU than a one-row write."""
    db = transaction.get_connection()
    if one_statement and not db.in_atomic_block and db.get_autocommit():
        return contextlib.nullcontext()
    return transaction.atomic()


def _rows_per_statement(db, rows: list[Message]) -> int:
    """How many rows one INSERT may carry: the database's limit on parameters per statement."""
    return max(db.ops.bulk_batch_size(_INSERTED_FIELDS, rows), 1)


def insert_rows(rows: list[Message]) -> list[Message]:
    """``Message.objects.bulk_create(rows)`` without Django's query compiler and connection proxy, which cost more
    CPU than the write: every column's value is still what the model makes of it (its defaults, ``auto_now``,
    each field's own conversion for this database), in an INSERT made here; each row's id comes from its RETURNING
    clause (PostgreSQL) or after it (SQLite, below). Inside the caller's transaction; raises what ``bulk_create``
    would (``IntegrityError`` for a key stored before). Idempotency keys must be distinct."""
    db = transaction.get_connection()  # the connection itself: each attribute of django.db.connection is a lookup
    if not db.features.can_return_rows_from_bulk_insert:  # no INSERT ... RETURNING here: Django's way
        return Message.objects.bulk_create(rows)
    fields = _INSERTED_FIELDS
    step = _rows_per_statement(db, rows)
    ids: dict[str, int] = {}
    # SQLite: an INSERT that returns rows holds the write lock from its first step until its rows are read, while
    # this thread waits its turn to run Python again (a busy process: milliseconds); every other writer, of this
    # process or another, sleeps in SQLite's busy handler meanwhile. Without RETURNING the write and its commit are
    # one step; the ids come after (one row: its rowid; several: read back by key, a read takes no lock).
    returning = db.vendor != "sqlite"
    with db.cursor() as cursor:
        for start in range(0, len(rows), step):
            chunk = rows[start : start + step]
            params = [field.get_db_prep_save(field.pre_save(row, True), db) for row in chunk for field in fields]
            cursor.execute(_insert_sql(db, len(chunk), returning), params)
            if returning:
                ids.update(cursor.fetchall())
            elif len(chunk) == 1:
                ids[chunk[0].idempotency_key] = cursor.lastrowid
        if len(ids) < len(rows):
            ids.update(_ids_of(cursor, db, [row.idempotency_key for row in rows if row.idempotency_key not in ids]))
    for row in rows:
        row.id = ids[row.idempotency_key]
        row._state.adding, row._state.db = False, db.alias
    return rows


def _insert_sql(db, count: int, returning: bool) -> str:
    """INSERT of ``count`` rows of every column but the id, with ``returning`` the (idempotency key, id) of each
    (made once per database kind, row count and form; counts stay under the database's parameter limit)."""
    key = (db.vendor, count, returning)
    sql = _INSERT_SQL.get(key)
    if sql is None:
        qn = db.ops.quote_name
        one_row = "(" + ", ".join(["%s"] * len(_INSERTED_FIELDS)) + ")"
        sql = (
            f"INSERT INTO {qn(Message._meta.db_table)} ({', '.join(qn(f.column) for f in _INSERTED_FIELDS)}) "
            f"VALUES {', '.join([one_row] * count)}"
        )
        if returning:
            sql += f" RETURNING {qn('idempotency_key')}, {qn('id')}"
        _INSERT_SQL[key] = sql
    return sql


def _ids_of(cursor, db, keys: list[str]) -> dict[str, int]:
    """The ids of the rows stored under ``keys`` (one plain SELECT per ``KEYS_PER_READ``)."""
    qn = db.ops.quote_name
    found: dict[str, int] = {}
    for start in range(0, len(keys), KEYS_PER_READ):
        chunk = keys[start : start + KEYS_PER_READ]
        cursor.execute(
            f"SELECT {qn('idempotency_key')}, {qn('id')} FROM {qn(Message._meta.db_table)} "
            f"WHERE {qn('idempotency_key')} IN ({', '.join(['%s'] * len(chunk))})",
            chunk,
        )
        found.update(cursor.fetchall())
    return found


KEYS_PER_READ = 500  # keys one read of ``_ids_of`` asks for (SQLite's parameter limit was 999 before 3.32)
_INSERT_SQL: dict[tuple[str, int, bool], str] = {}
_INSERTED_FIELDS = [field for field in Message._meta.concrete_fields if not field.primary_key]


def _new_row(item: ToRecord) -> Message:
    now = timezone.now()
    return Message(
        idempotency_key=item.msg.idempotency_key,
        user_id=item.user_id,
        device_id=item.device_id,
        status=Status.RECEIVED if item.accepted else Status.REJECTED,
        last_error=item.reason,
        next_attempt_at=now if item.accepted else None,
        **_row_fields(item.msg),
    )


def record_dead_letter(
    key: str,
    *,
    sender: str,
    raw: str,
    reason: str,
    device_id: int | None = None,
    user_id: int | None = None,
    direction: Direction = Direction.FROM_DEVICE,
    protocol: Protocol = Protocol.UNKNOWN,
) -> Recorded:
    """Store input that can never be delivered (an undecodable Hive packet, text the database refuses), so its
    source can be acknowledged. Everything is stored in a form any database takes (ASCII escapes)."""
    key = _fits_key(key)
    existing = Message.objects.filter(idempotency_key=key).values("id", "status").first()
    if existing:
        return Recorded(existing["id"], existing["status"], created=False)
    safe = CombinedMessage(
        direction=direction,
        protocol=protocol,
        sender=_ascii(sender, 320),
        recipient="",
        text=raw if raw.isascii() and "\x00" not in raw else _ascii(raw, 20_000),
        idempotency_key=key,
    )
    try:
        with transaction.atomic():  # a savepoint when called within a batch's transaction
            row = Message.objects.create(
                idempotency_key=key,
                device_id=device_id,
                user_id=user_id,
                status=Status.DEAD,
                last_error=_ascii(reason, 2000),
                error_history=[{"at": timezone.now().isoformat(), "error": _ascii(reason, 500)}],
                **_row_fields(safe),
            )
    except IntegrityError:
        row = Message.objects.get(idempotency_key=key)
        return Recorded(row.id, row.status, created=False)
    log.warning("message %s dead key=%s %s", row.id, mask_key(key), reason)
    return Recorded(row.id, row.status, created=True, reason=reason)


def _ascii(text: str, limit: int) -> str:
    """``text`` with everything outside printable ASCII escaped (``\\x00``, ``\\udcff``), cut to ``limit``."""
    escaped = text if text.isascii() and text.isprintable() else text.encode("ascii", "backslashreplace").decode()
    return escaped.replace("\x00", "\\x00")[:limit]


def claim(message_id: int, policy: RetryPolicy = DEFAULT_POLICY, now: datetime | None = None) -> Message | None:
    """Take the lease on a due message; None if it is not due, final, or leased by another sender."""
    rows = claim_many([message_id], policy, now)
    return rows[0] if rows else None


# What senders read of a claimed row: fewer columns, cheaper rows. Every field a sender reads must be here: one
# left out loads on first use, a query per message.
CLAIMED_FIELDS = (
    *("id", "direction", "protocol", "sender", "recipient", "subject", "text", "status", "attempts"),
    *("idempotency_key", "remote_id", "lease_token", "user_id", "device_id", "created_at"),
    *("latitude", "longitude", "location_cep_km"),
    *("user__id", "user__username", "user__twilio_number", "user__is_active", "user__share_location"),
    *("device__id", "device__device_id", "device__is_active", "device__owner", "device__network"),
)


def claim_many(ids: list[int], policy: RetryPolicy = DEFAULT_POLICY, now: datetime | None = None) -> list[Message]:
    """Take the lease on those of ``ids`` that are due and free, in one write; returns them (by id).

    The lease carries a fresh token, so the rows read back are exactly the ones this call won, even when
    another sender claims some of the same ids at the same moment.
    """
    if not ids:
        return []
    now = now or timezone.now()
    token = uuid.uuid4().hex
    if not _take_leases(ids, token, now, now + policy.lease):
        return []
    rows = claimed_rows(ids, token)
    for row in rows:
        log.info("message %s sending attempt=%s", row.id, row.attempts)
    return rows


def claimed_rows(ids: list[int], token: str) -> list[Message]:
    """Those of ``ids`` leased under ``token``, by id, as ``Message.objects.select_related("user", "device")
    .only(*CLAIMED_FIELDS)`` loads them, with one SELECT made here: compiling the ORM's query cost more CPU than
    all the rest of a claim (a third of a one-message batch's send). Every column goes through its field's
    conversion for this database, as the ORM's would; a test compares the two, field by field."""
    db = transaction.get_connection()
    shape = _ClaimedShape.of(db)
    with db.cursor() as cursor:
        cursor.execute(shape.sql % ", ".join(["%s"] * len(ids)), [*ids, token])
        return [shape.row(values, db) for values in cursor.fetchall()]


class _ClaimedShape:
    """The SELECT of ``claimed_rows`` for one kind of database, and how its columns become the three models."""

    _made: dict[str, _ClaimedShape] = {}

    @classmethod
    def of(cls, db) -> _ClaimedShape:
        shape = cls._made.get(db.vendor)
        if shape is None:
            shape = cls._made[db.vendor] = cls(db)
        return shape

    def __init__(self, db) -> None:
        qn = db.ops.quote_name
        user_field, device_field = Message._meta.get_field("user"), Message._meta.get_field("device")
        wanted = {None: set(), "user": set(), "device": set()}
        for name in CLAIMED_FIELDS:
            relation, _, field = name.rpartition("__")
            wanted[relation or None].add(field)
        # (model, table alias, its fields in the model's order: ``from_db`` takes the values in that order)
        self.parts = [
            self._part(Message, "m", wanted[None]),
            self._part(user_field.related_model, "u", wanted["user"]),
            self._part(device_field.related_model, "d", wanted["device"]),
        ]
        columns, self.converters = [], []
        for _, alias, fields, _, _ in self.parts:
            for field in fields:
                columns.append(f"{alias}.{qn(field.column)}")
                col = field.get_col(alias)
                self.converters.append((col, db.ops.get_db_converters(col) + col.get_db_converters(db)))
        message_table = qn(Message._meta.db_table)
        self.sql = (
            f"SELECT {', '.join(columns)} FROM {message_table} m "
            f"LEFT OUTER JOIN {qn(user_field.related_model._meta.db_table)} u "
            f"ON u.{qn(user_field.target_field.column)} = m.{qn(user_field.column)} "
            f"LEFT OUTER JOIN {qn(device_field.related_model._meta.db_table)} d "
            f"ON d.{qn(device_field.target_field.column)} = m.{qn(device_field.column)} "
            f"WHERE m.{qn('id')} IN (%s) AND m.{qn('lease_token')} = %%s ORDER BY m.{qn('id')}"
        )  # the id placeholders go in for "%s", one per id, on each claim
        self.user_field, self.device_field = user_field, device_field

    @staticmethod
    def _part(model, alias: str, names: set[str]) -> tuple:
        """(model, alias, its fields read, their attnames, where its primary key is among them)"""
        wanted = {model._meta.get_field(name).attname for name in names} | {model._meta.pk.attname}
        fields = [field for field in model._meta.concrete_fields if field.attname in wanted]
        return model, alias, fields, [field.attname for field in fields], fields.index(model._meta.pk)

    def row(self, values, db) -> Message:
        converted = []
        for value, (col, converters) in zip(values, self.converters, strict=True):
            for convert in converters:
                value = convert(value, col, db)
            converted.append(value)
        made, start = [], 0
        for model, _, fields, attnames, pk_at in self.parts:
            chunk = converted[start : start + len(fields)]
            start += len(fields)
            made.append(None if chunk[pk_at] is None else model.from_db(db.alias, attnames, chunk))
        message, user, device = made
        self.user_field.set_cached_value(message, user)
        self.device_field.set_cached_value(message, device)
        return message


def _take_leases(ids: list[int], token: str, now: datetime, until: datetime) -> int:
    """The claim's one write: due and free rows of ``ids`` (received, queued or failed and due by
    next_attempt_at, or sending with an expired lease) become sending under ``token``. Returns how many.

    Plain SQL: on every message's path, and Django's building of this statement cost more than running it."""
    table = connection.ops.quote_name(Message._meta.db_table)
    due = tuple(status.value for status in DUE_STATUSES)
    sending = Status.SENDING.value
    at = connection.ops.adapt_datetimefield_value
    sql = (
        f"UPDATE {table} SET status = %s, lease_until = %s, lease_token = %s, attempts = attempts + 1 "
        f"WHERE id IN ({', '.join(['%s'] * len(ids))}) "
        f"AND (status IN ({', '.join(['%s'] * len(due))}) OR (status = %s AND lease_until < %s)) "
        "AND (next_attempt_at IS NULL OR next_attempt_at <= %s OR status = %s)"
    )
    params = [sending, at(until), token, *ids, *due, sending, at(now), at(now), sending]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def _held(message_id: int, token: str):
    """The row while the claim ``token`` still holds its lease: every outcome a sender records is fenced on
    it, so a sender whose lease ran out (and whose message another sender re-claimed) changes nothing."""
    return Message.objects.filter(id=message_id, status=Status.SENDING, lease_token=token)


# Not a status: what recording an outcome returns when the claim lost its lease (the row is left alone).
STALE = "stale"


def _lost_lease(message_id: int, outcome: Status) -> str:
    log.warning("message %s %s not recorded: its lease was lost to another sender", message_id, outcome)
    return STALE


def save_progress(message_id: int, token: str, remote_id: str) -> bool:
    """Record partial progress (e.g. packets already handed to the Hive) without ending the lease."""
    return bool(_held(message_id, token).update(remote_id=remote_id[:255]))


def renew_lease(ids: list[int], token: str, policy: RetryPolicy = DEFAULT_POLICY) -> set[int]:
    """Extend the lease of those of ``ids`` this claim still holds; returns their ids (the rest were lost)."""
    if not ids:
        return set()
    held = Message.objects.filter(id__in=ids, status=Status.SENDING, lease_token=token)
    held.update(lease_until=timezone.now() + policy.lease)
    return set(held.values_list("id", flat=True))


def mark_sent(message_id: int, token: str, remote_id: str) -> str:
    sent = mark_sent_many(token, [(message_id, remote_id)])
    return Status.SENT if sent else _lost_lease(message_id, Status.SENT)


# Rows one UPDATE of ``mark_sent_many`` records (three parameters each: far below any database's limit).
SENT_PER_STATEMENT = 100


def mark_sent_many(token: str, sent: list[tuple[int, str]]) -> int:
    """Record ``(message id, remote id)`` pairs of the claim ``token`` as sent: one UPDATE for them all (up to
    ``SENT_PER_STATEMENT``), so on SQLite the write lock is taken and the commit made within one step, never held
    while this thread waits to run Python again. Rows whose lease was lost are left alone. Returns how many were
    recorded."""
    if not sent:
        return 0
    now = timezone.now()
    stamp = connection.ops.adapt_datetimefield_value(now)
    table = connection.ops.quote_name(Message._meta.db_table)
    sending = Status.SENDING.value
    recorded: set[int] = set()
    for start in range(0, len(sent), SENT_PER_STATEMENT):
        chunk = sent[start : start + SENT_PER_STATEMENT]
        sql = (
            f"UPDATE {table} SET status = %s, remote_id = CASE id {' '.join(['WHEN %s THEN %s'] * len(chunk))} END, "
            "sent_at = %s, updated_at = %s, lease_until = NULL, next_attempt_at = NULL, last_error = '' "
            f"WHERE id IN ({', '.join(['%s'] * len(chunk))}) AND status = %s AND lease_token = %s"
        )
        pairs = [value for mid, rid in chunk for value in (mid, rid[:255])]
        params = [Status.SENT.value, *pairs, stamp, stamp, *(mid for mid, _ in chunk), sending, token]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            changed = cursor.rowcount
        ids = [mid for mid, _ in chunk]
        if changed == len(chunk):  # the usual case: every lease held
            recorded.update(ids)
        else:  # which ones: those now sent under this claim's token
            recorded.update(
                Message.objects.filter(id__in=ids, status=Status.SENT, lease_token=token).values_list("id", flat=True)
            )
    for message_id, remote_id in sent:
        if message_id in recorded:
            log.info("message %s sent remote_id=%s", message_id, remote_id)
        else:
            _lost_lease(message_id, Status.SENT)
    return len(recorded)


def _history(row: Message, error: str, now: datetime) -> list:
    return (row.error_history or [])[-19:] + [{"at": now.isoformat(), "attempt": row.attempts, "error": error[:500]}]


def mark_retry(
    message_id: int,
    token: str,
    error: str,
    *,
    retry_after: float | None = None,
    policy: RetryPolicy = DEFAULT_POLICY,
    now: datetime | None = None,
) -> str:
    """A temporary failure: back off and try again, or dead when out of attempts/age. Returns the new status
    (``stale`` when the lease was lost: the sender that holds it now records the outcome)."""
    now = now or timezone.now()
    row = _held(message_id, token).only("attempts", "created_at", "error_history").first()
    if row is None:
        return _lost_lease(message_id, Status.FAILED)
    too_old = now - row.created_at > policy.max_age
    if row.attempts >= policy.max_attempts or too_old:
        why = "too old" if too_old else f"{row.attempts} attempts"
        return mark_dead(message_id, token, f"gave up after {why}: {error}", now=now)
    delay = max(policy.delay(row.attempts), retry_after or 0.0)
    updated = _held(message_id, token).update(
        status=Status.FAILED,
        last_error=error[:2000],
        error_history=_history(row, error, now),
        next_attempt_at=now + timedelta(seconds=delay),
        lease_until=None,
    )
    if not updated:
        return _lost_lease(message_id, Status.FAILED)
    log.info("message %s failed attempt=%s retry_in=%.1fs error=%s", message_id, row.attempts, delay, error[:200])
    return Status.FAILED


def mark_dead(message_id: int, token: str, error: str, now: datetime | None = None) -> str:
    now = now or timezone.now()
    row = _held(message_id, token).only("attempts", "error_history").first()
    updated = row is not None and _held(message_id, token).update(
        status=Status.DEAD,
        last_error=error[:2000],
        error_history=_history(row, error, now),
        lease_until=None,
        next_attempt_at=None,
    )
    if not updated:
        return _lost_lease(message_id, Status.DEAD)
    log.warning("message %s dead error=%s", message_id, error[:200])
    return Status.DEAD


# What a person may send again by hand (the admin's "Retry now"): never a sent, rejected or in-flight message.
RETRYABLE_BY_HAND = (Status.FAILED, Status.DEAD, Status.QUEUED)


def retry_now(ids: Iterable[int], now: datetime | None = None) -> int:
    """Re-queue those of ``ids`` that failed, died or wait, due at once; the sweep sends them. Returns how many.

    The status is checked in the write itself, so a message a sender claimed a moment ago is left alone;
    each one re-queued is read back in the same transaction (its rows still locked), to log it by its id."""
    now = now or timezone.now()
    ids = sorted(set(ids))
    count, queued = 0, []
    with transaction.atomic():
        for start in range(0, len(ids), 500):  # bounded IN lists, however many a person selected
            chunk = ids[start : start + 500]
            retryable = Message.objects.filter(id__in=chunk, status__in=RETRYABLE_BY_HAND)
            count += retryable.update(status=Status.QUEUED, next_attempt_at=now, lease_until=None)
            mine = Message.objects.filter(id__in=chunk, status=Status.QUEUED, next_attempt_at=now)
            queued += mine.values_list("id", flat=True)
    for message_id in queued:
        log.info("message %s queued by hand (retry now)", message_id)
    return count


def set_status_by_hand(message_id: int, status: Status) -> bool:
    """A person set the status on the message's admin page: store just that. Returns False for no such row."""
    status = Status(status)
    changed = bool(Message.objects.filter(id=message_id).update(status=status, updated_at=timezone.now()))
    if changed:
        log.info("message %s %s set by hand", message_id, status)
    return changed


FINAL = frozenset({Status.SENT, Status.REJECTED, Status.DEAD})
FORGET_BATCH = 500


def forget_user_messages(user_id: int, deleted: str = "(deleted)") -> int:
    """A deleted account's messages stay for the service's counts but lose everything personal (text, subject,
    addresses, the remote services' ids) and their owner; those not delivered yet are stopped (dead, never to a
    device's next owner). Call it inside the transaction that deletes the account. Returns how many."""
    fields = [
        "user", "text", "subject", "external_id", "remote_id", "authentication", "sender", "recipient",
        "error_history", "last_error", "status", "next_attempt_at", "lease_until", "lease_token", "idempotency_key",
    ]  # fmt: skip
    rows = Message.objects.filter(user_id=user_id).only("pk", "status", "last_error", "idempotency_key")
    count, stopped, batch = 0, [], []
    for row in rows.iterator(chunk_size=FORGET_BATCH):
        final = row.status in FINAL
        row.user = None
        row.text = row.subject = row.external_id = row.remote_id = row.authentication = ""
        row.sender = row.recipient = deleted
        row.error_history = []
        row.last_error = scrub(row.last_error) if final else "account deleted before delivery"
        if not final:
            row.status, row.next_attempt_at, row.lease_until, row.lease_token = Status.DEAD, None, None, ""
            stopped.append(row.pk)
        row.idempotency_key = "deleted:" + hashlib.sha256(row.idempotency_key.encode()).hexdigest()
        batch.append(row)
        if len(batch) >= FORGET_BATCH:
            Message.objects.bulk_update(batch, fields)
            count, batch = count + len(batch), []
    if batch:
        Message.objects.bulk_update(batch, fields)
        count += len(batch)
    for message_id in stopped:
        log.info("message %s dead: account deleted before delivery", message_id)
    return count


def due_filter(now: datetime, grace: timedelta = timedelta(seconds=5)) -> Q:
    """The rows a sender should (re)send at ``now``: stale fresh rows, due retries, expired leases."""
    return (
        Q(status=Status.RECEIVED, created_at__lte=now - grace)
        | Q(status__in=(Status.QUEUED, Status.FAILED), next_attempt_at__lte=now)
        | Q(status=Status.SENDING, lease_until__lt=now)
    )


def due(
    direction: Direction,
    protocols: list[Protocol],
    *,
    limit: int = 100,
    now: datetime | None = None,
    grace: timedelta = timedelta(seconds=5),
) -> list[int]:
    """Ids of messages this channel should (re)send now: due retries, stale fresh rows, expired leases.

    Fresh ``received`` rows get a short grace period, since the intake's kick normally delivers them.
    """
    now = now or timezone.now()
    query = Message.objects.filter(direction=direction, protocol__in=[p.key for p in protocols]).filter(
        due_filter(now, grace)
    )
    return list(query.order_by("next_attempt_at", "id").values_list("id", flat=True)[:limit])


def lock_users(user_ids: Iterable[int]) -> None:
    """Within a transaction: hold these users' rows until it ends, so that what is counted for them and then stored
    is not raced by another process storing for them. PostgreSQL locks the rows (in id order: two batches never
    wait on each other crosswise); on SQLite the transaction already holds the one write lock (IMMEDIATE)."""
    from web.accounts.models import User

    list(User.objects.select_for_update().filter(id__in=sorted(set(user_ids))).order_by("id").values_list("id"))


def count_this_month(user_id: int, now: datetime | None = None, *, direction: Direction | None = None) -> int:
    """Messages stored (not refused) for ``user_id`` this calendar month; only ``direction`` when given."""
    now = now or timezone.now()
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    query = Message.objects.filter(user_id=user_id, created_at__gte=start)
    if direction is not None:
        query = query.filter(direction=direction)
    return query.exclude(status=Status.REJECTED).count()


def count_last_hour_from_device(device_pk: int, now: datetime | None = None) -> int:
    """Messages from the device (its row id) stored, not refused, in the last hour: its outbound rate."""
    since = (now or timezone.now()) - timedelta(hours=1)
    return (
        Message.objects.filter(device_id=device_pk, direction=Direction.FROM_DEVICE, created_at__gte=since)
        .exclude(status=Status.REJECTED)
        .count()
    )


def count_last_hour_from_sender(user_id: int, sender: str, now: datetime | None = None) -> int:
    """Messages from ``sender`` (any case) to the user's device stored, not refused, in the last hour."""
    since = (now or timezone.now()) - timedelta(hours=1)
    return (
        Message.objects.filter(
            user_id=user_id, direction=Direction.TO_DEVICE, sender__iexact=sender, created_at__gte=since
        )
        .exclude(status=Status.REJECTED)
        .count()
    )
