"""The outbox's state machine on the real database: one write per state change, idempotent intake."""

from __future__ import annotations

import ast
import dataclasses
import random
from datetime import timedelta

import pytest
from django.utils import timezone

from messaging.core.types import CombinedMessage, Direction, Protocol, Status
from messaging.outbox import store as outbox
from messaging.outbox.store import RetryPolicy
from tests.paths import REPO_ROOT
from web.delivery.models import Message

pytestmark = pytest.mark.django_db


def combined(key="k1", direction=Direction.TO_DEVICE, protocol=Protocol.EMAIL):
    return CombinedMessage(
        direction=direction,
        protocol=protocol,
        sender="amy@example.org",
        recipient="bob@x.test",
        text="hello",
        idempotency_key=key,
    )


def stored(make_user, key="k1", **kw):
    user = make_user()
    rec = outbox.record(combined(key, **kw), user_id=user.id, device_id=user.devices.get().id, accepted=True)
    return rec


def test_record_is_idempotent_by_key(make_user):
    first = stored(make_user)
    again = outbox.record(combined(), user_id=None, device_id=None, accepted=True)
    assert first.created and not again.created
    assert again.message_id == first.message_id
    assert Message.objects.count() == 1


def test_rejected_is_final_and_never_due(make_user):
    rec = outbox.record(combined(), user_id=None, device_id=None, accepted=False, reason="unknown_recipient")
    row = Message.objects.get(id=rec.message_id)
    assert row.status == "rejected" and row.last_error == "unknown_recipient"
    assert outbox.claim(rec.message_id) is None
    assert outbox.due(Direction.TO_DEVICE, [Protocol.EMAIL], now=timezone.now() + timedelta(days=1)) == []


def test_claim_is_exclusive_until_the_lease_runs_out(make_user):
    rec = stored(make_user)
    row = outbox.claim(rec.message_id)
    assert row is not None and row.status == "sending" and row.attempts == 1
    assert outbox.claim(rec.message_id) is None, "a second sender must not get it"
    later = timezone.now() + RetryPolicy().lease + timedelta(seconds=1)
    assert outbox.due(Direction.TO_DEVICE, [Protocol.EMAIL], now=later) == [rec.message_id]
    again = outbox.claim(rec.message_id, now=later)
    assert again is not None and again.attempts == 2


def test_sent_is_final(make_user):
    rec = stored(make_user)
    row = outbox.claim(rec.message_id)
    outbox.mark_sent(rec.message_id, row.lease_token, "pkt-1")
    row = Message.objects.get(id=rec.message_id)
    assert (row.status, row.remote_id) == ("sent", "pkt-1") and row.sent_at
    assert outbox.claim(rec.message_id, now=timezone.now() + timedelta(days=1)) is None


def test_retry_backs_off_then_dies_after_max_attempts(make_user):
    policy = RetryPolicy(max_attempts=3, base_delay=10, max_delay=100)
    rec = stored(make_user)
    now = timezone.now()
    for attempt in (1, 2):
        claimed = outbox.claim(rec.message_id, policy, now=now)
        assert claimed is not None
        assert (
            outbox.mark_retry(rec.message_id, claimed.lease_token, f"boom {attempt}", policy=policy, now=now)
            == "failed"
        )
        row = Message.objects.get(id=rec.message_id)
        assert row.next_attempt_at > now, "not due again immediately"
        assert outbox.claim(rec.message_id, policy, now=now) is None
        now = row.next_attempt_at
    claimed = outbox.claim(rec.message_id, policy, now=now)
    assert claimed is not None
    assert outbox.mark_retry(rec.message_id, claimed.lease_token, "boom 3", policy=policy, now=now) == "dead"
    row = Message.objects.get(id=rec.message_id)
    assert row.status == "dead" and "3 attempts" in row.last_error
    assert [h["error"] for h in row.error_history] == ["boom 1", "boom 2", row.last_error]


def test_retry_after_is_honoured(make_user):
    rec = stored(make_user)
    claimed = outbox.claim(rec.message_id)
    now = timezone.now()
    outbox.mark_retry(rec.message_id, claimed.lease_token, "429", retry_after=600, now=now)
    assert Message.objects.get(id=rec.message_id).next_attempt_at >= now + timedelta(seconds=600)


def test_backoff_grows_and_is_capped():
    policy = RetryPolicy(base_delay=2, max_delay=60)
    rng = random.Random(7)
    delays = [policy.delay(a, rng) for a in range(1, 12)]
    assert all(1 <= d <= 60 for d in delays)
    assert delays[5] > delays[0]
    assert policy.delay(30, rng) <= 60


def test_due_by_channel_and_grace(make_user):
    to_dev = stored(make_user, key="a")
    sms_out = stored(make_user, key="b", direction=Direction.FROM_DEVICE, protocol=Protocol.SMS)
    now = timezone.now()
    both = [Protocol.EMAIL, Protocol.SMS]
    assert outbox.due(Direction.TO_DEVICE, both, now=now) == [], "fresh rows belong to the intake's kick"
    later = now + timedelta(seconds=10)
    assert outbox.due(Direction.TO_DEVICE, both, now=later) == [to_dev.message_id]
    assert outbox.due(Direction.FROM_DEVICE, [Protocol.SMS], now=later) == [sms_out.message_id]
    assert outbox.due(Direction.FROM_DEVICE, [Protocol.EMAIL], now=later) == []


def test_dead_letter_is_stored_once(make_user):
    first = outbox.record_dead_letter("hive:9", sender="device:1", raw="!!", reason="bad base64")
    again = outbox.record_dead_letter("hive:9", sender="device:1", raw="!!", reason="bad base64")
    assert first.created and not again.created
    row = Message.objects.get(id=first.message_id)
    assert row.status == "dead" and row.protocol == "unknown" and row.text == "!!"


def test_count_this_month_skips_rejected(make_user):
    user = make_user()
    outbox.record(combined("m1"), user_id=user.id, device_id=None, accepted=True)
    outbox.record(combined("m2"), user_id=user.id, device_id=None, accepted=False, reason="quota_exceeded")
    assert outbox.count_this_month(user.id) == 1


def to_record(user, key, accepted=True):
    return outbox.ToRecord(combined(key), user_id=user.id, device_id=user.devices.get().id, accepted=accepted)


def test_record_many_stores_a_batch_in_order_and_each_key_once(make_user):
    user = make_user()
    earlier = outbox.record(combined("seen"), user_id=user.id, device_id=None, accepted=True)
    batch = [
        to_record(user, "b1"),
        to_record(user, "seen"),
        to_record(user, "b2", accepted=False),
        to_record(user, "b1"),
    ]
    recs = outbox.record_many(batch)
    assert [r.created for r in recs] == [True, False, True, False]
    assert recs[1].message_id == earlier.message_id and recs[3].message_id == recs[0].message_id
    assert recs[0].message_id < recs[2].message_id, "stored in the batch's order"
    statuses = dict(Message.objects.values_list("idempotency_key", "status"))
    assert statuses == {"seen": "received", "b1": "received", "b2": "rejected"}
    assert Message.objects.get(id=recs[0].message_id).next_attempt_at is not None, "accepted rows are due now"
    assert outbox.record_many([]) == []


def test_insert_rows_stores_what_bulk_create_stores(make_user):
    """The store's own INSERT writes every column as Django's bulk_create would (defaults, auto_now, each
    field's conversion), so no column is forgotten or written in another form."""
    user = make_user()
    msg = CombinedMessage(
        direction=Direction.FROM_DEVICE,
        protocol=Protocol.SMS,
        sender="device 7",
        recipient="+15005550006",
        text="at the hut",
        idempotency_key="unused",
        subject="re: plans",
        external_id="ext-1",
        authentication="spf=pass",
        latitude=46.5,
        longitude=-121.25,
        location_cep_km=2.5,
    )
    ours, django_s = (
        outbox._new_row(outbox.ToRecord(msg, user_id=user.id, device_id=user.devices.get().id, accepted=accepted))
        for accepted in (True, True)
    )
    ours.idempotency_key, django_s.idempotency_key = "ours", "django"
    outbox.insert_rows([ours])
    Message.objects.bulk_create([django_s])
    assert ours.id and Message.objects.get(id=ours.id).idempotency_key == "ours"
    a, b = (Message.objects.filter(idempotency_key=key).values().get() for key in ("ours", "django"))
    for stamp in ("created_at", "updated_at", "next_attempt_at"):
        assert abs(a.pop(stamp) - b.pop(stamp)) < timedelta(seconds=5), stamp
    for column in ("id", "idempotency_key"):
        a.pop(column), b.pop(column)
    assert a == b


def test_insert_rows_gives_each_row_its_own_id_past_the_databases_parameter_limit(make_user):
    user = make_user()
    rows = [outbox._new_row(to_record(user, f"many{n}")) for n in range(150)]  # SQLite: 999 parameters a statement
    outbox.insert_rows(rows)
    stored = dict(Message.objects.filter(idempotency_key__startswith="many").values_list("idempotency_key", "id"))
    assert len(stored) == 150 and {row.idempotency_key: row.id for row in rows} == stored


def test_claim_many_returns_exactly_what_it_won(make_user):
    user = make_user()
    ids = [r.message_id for r in outbox.record_many([to_record(user, f"c{n}") for n in range(4)])]
    taken = outbox.claim(ids[1])
    rows = outbox.claim_many(ids + [999_999])
    assert [r.id for r in rows] == [ids[0], ids[2], ids[3]], "not the one another sender holds, nor a missing id"
    assert all(r.status == "sending" and r.user_id == user.id for r in rows)
    assert len({r.lease_token for r in rows} | {Message.objects.get(id=taken.id).lease_token}) == 2
    assert outbox.claim_many(ids) == [], "all leased now"


def test_claimed_rows_are_what_the_orm_loads_field_by_field_without_a_query_more(make_user, django_assert_num_queries):
    """claim_many reads its rows with its own SELECT; each field a sender reads (CLAIMED_FIELDS, through the user
    and the device) has the value and type the ORM's select_related(...).only(...) gives, and reading them costs
    no query (a field left out would load on first use, a query per message)."""
    user = make_user()
    user.share_location = True
    user.save()
    located = dataclasses.replace(combined("c-located"), latitude=47.5, longitude=-121.25, location_cep_km=3.0)
    items = [outbox.ToRecord(located, user_id=user.id, device_id=user.devices.get().id, accepted=True)]
    items.append(outbox.ToRecord(combined("c-nobody"), user_id=None, device_id=None, accepted=True))
    ids = [r.message_id for r in outbox.record_many(items)]
    rows = outbox.claim_many(ids)
    orm = list(
        Message.objects.select_related("user", "device").only(*outbox.CLAIMED_FIELDS).filter(id__in=ids).order_by("id")
    )
    assert [r.id for r in rows] == ids and len(orm) == 2

    def read(row, name):  # a relation named last is read as its id, as senders read it (device.owner_id)
        *path, last = name.split("__")
        for part in path:
            row = getattr(row, part)
        return getattr(row, row._meta.get_field(last).attname)

    with django_assert_num_queries(0):
        for ours, theirs in zip(rows, orm, strict=True):
            for name in outbox.CLAIMED_FIELDS:
                if ours.user is None and name.startswith(("user__", "device__")):
                    assert theirs.user is None and theirs.device is None
                    continue
                mine, expected = read(ours, name), read(theirs, name)
                assert (mine, type(mine)) == (expected, type(expected)), name
            assert ours.device_id is None or ours.device.owner_id == user.id
    assert rows[0].created_at.tzinfo is not None and rows[0].user.share_location is True


def test_mark_sent_many_records_each_remote_id(make_user):
    user = make_user()
    ids = [r.message_id for r in outbox.record_many([to_record(user, f"s{n}") for n in range(3)])]
    token = outbox.claim_many(ids)[0].lease_token
    outbox.mark_sent_many(token, [(ids[0], "p-1"), (ids[2], "p-3,p-4")])
    rows = {m.id: m for m in Message.objects.filter(id__in=ids)}
    assert [(rows[i].status, rows[i].remote_id) for i in ids] == [("sent", "p-1"), ("sending", ""), ("sent", "p-3,p-4")]
    assert rows[ids[0]].sent_at and rows[ids[0]].lease_until is None


def test_a_stale_sender_changes_nothing_once_its_lease_was_lost(make_user):
    """Every state change is fenced on the lease token: the sender whose lease ran out cannot turn a message
    another sender re-claimed (and sent) back to failed or dead, nor record its own send or progress."""
    rec = stored(make_user)
    stale = outbox.claim(rec.message_id)
    later = timezone.now() + RetryPolicy().lease + timedelta(seconds=1)
    fresh = outbox.claim(rec.message_id, now=later)
    assert fresh is not None and fresh.lease_token != stale.lease_token
    assert outbox.save_progress(rec.message_id, stale.lease_token, "p-stale") is False
    outbox.mark_sent(rec.message_id, fresh.lease_token, "p-fresh")
    assert outbox.mark_retry(rec.message_id, stale.lease_token, "timeout") == "stale"
    assert outbox.mark_dead(rec.message_id, stale.lease_token, "refused") == "stale"
    assert outbox.mark_sent(rec.message_id, stale.lease_token, "p-stale") == "stale"
    row = Message.objects.get(id=rec.message_id)
    assert (row.status, row.remote_id, row.last_error) == ("sent", "p-fresh", "")


def test_renew_lease_extends_only_what_the_claim_still_holds(make_user):
    user = make_user()
    ids = [r.message_id for r in outbox.record_many([to_record(user, f"r{n}") for n in range(2)])]
    policy = RetryPolicy(lease=timedelta(seconds=5))
    token = outbox.claim_many(ids, policy)[0].lease_token
    other = outbox.claim(ids[1], policy, now=timezone.now() + timedelta(seconds=6))
    assert other is not None
    assert outbox.renew_lease(ids, token, policy) == {ids[0]}
    assert Message.objects.get(id=ids[0]).lease_until > timezone.now() + timedelta(seconds=4)


def test_text_is_made_storable_where_it_enters():
    msg = CombinedMessage(Direction.TO_DEVICE, Protocol.EMAIL, "\udcff@x.org", "bob@x.test", "a\x00b \ud83d\ude00", "k")
    assert (msg.sender, msg.text) == ("\ufffd@x.org", "ab \U0001f600")
    plain = combined()
    assert plain.text == "hello"


def test_nul_in_device_text_is_stored_not_refused(make_user):
    user = make_user()
    item = outbox.ToRecord(
        CombinedMessage(Direction.FROM_DEVICE, Protocol.SMS, "device:1", "+14155550100", "SOS\x00 at camp", "n1"),
        user_id=user.id,
        device_id=user.devices.get().id,
        accepted=True,
    )
    [rec] = outbox.record_many([item])
    assert Message.objects.get(id=rec.message_id).text == "SOS at camp"


def test_one_item_the_database_refuses_is_dead_lettered_and_its_neighbours_stored(make_user):
    """Should an item still carry what the database refuses (here a lone surrogate slipped past the cleaning),
    the batch is stored item by item: the others are stored as usual, the bad one as a dead letter."""
    user = make_user()
    bad = combined("bad")
    object.__setattr__(bad, "text", "broken \udcff text")
    batch = [
        to_record(user, "good1"),
        outbox.ToRecord(bad, user.id, user.devices.get().id, True),
        to_record(user, "good2"),
    ]
    recs = outbox.record_many(batch)
    assert all(r.created for r in recs)
    rows = {r.idempotency_key: r for r in Message.objects.filter(id__in=[r.message_id for r in recs])}
    assert rows["good1"].status == rows["good2"].status == "received"
    assert rows["bad"].status == "dead" and "could not be stored" in rows["bad"].last_error
    assert rows["bad"].text == "broken \\udcff text" and rows["bad"].user_id == user.id
    assert outbox.record_many(batch)[1].message_id == rows["bad"].id, "a retry finds the dead letter"


def test_retry_now_requeues_only_failed_dead_or_queued_messages(make_user, caplog):
    user = make_user()
    ids = {
        status: outbox.record(combined(f"r-{status}"), user_id=user.id, device_id=None, accepted=True).message_id
        for status in Status
    }
    for status, message_id in ids.items():  # test setup: put each row in one status
        Message.objects.filter(id=message_id).update(status=status, next_attempt_at=None)
    now = timezone.now()
    with caplog.at_level("INFO", logger="messaging.outbox.store"):
        assert outbox.retry_now(list(ids.values()) + [999_999], now=now) == 3
    rows = {m.id: m for m in Message.objects.filter(id__in=ids.values())}
    requeued = {status for status, message_id in ids.items() if rows[message_id].next_attempt_at == now}
    assert requeued == {Status.FAILED, Status.DEAD, Status.QUEUED}
    assert {rows[ids[s]].status for s in requeued} == {"queued"}
    left_alone = (Status.RECEIVED, Status.SENDING, Status.SENT, Status.REJECTED)
    assert [rows[ids[s]].status for s in left_alone] == ["received", "sending", "sent", "rejected"]
    logged = {r.getMessage() for r in caplog.records}
    assert {f"message {ids[s]} queued by hand (retry now)" for s in requeued} <= logged


def test_retry_now_takes_a_selection_of_any_size(make_user):
    user = make_user()
    rows = [Message(idempotency_key=f"many-{n}", user=user, status=Status.DEAD) for n in range(1100)]
    ids = [row.id for row in Message.objects.bulk_create(rows)]
    assert outbox.retry_now(ids) == 1100
    assert Message.objects.filter(status=Status.QUEUED).count() == 1100


def test_set_status_by_hand_writes_only_the_status(make_user):
    rec = stored(make_user)
    claimed = outbox.claim(rec.message_id)
    assert outbox.set_status_by_hand(rec.message_id, Status.DEAD) is True
    row = Message.objects.get(id=rec.message_id)
    assert (row.status, row.lease_token, row.attempts) == ("dead", claimed.lease_token, 1)
    assert outbox.set_status_by_hand(999_999, Status.QUEUED) is False
    with pytest.raises(ValueError):
        outbox.set_status_by_hand(rec.message_id, "lost")


# Calls that write a row, and would write its status when given ``status=``.
WRITES = {"update", "create", "bulk_create", "bulk_update", "update_or_create", "get_or_create", "save"}


def _status_writes(source: str) -> list[int]:
    """Lines of ``source`` that write a message status: ``x.status = ...``, a write call given ``status=``
    (or ``update_fields``/``fields`` naming it), or SQL that sets it."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Attribute) and t.attr == "status" for t in targets):
                lines.append(node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in WRITES:
            for kw in node.keywords:
                named = {c.value for c in ast.walk(kw.value) if isinstance(c, ast.Constant)}
                if kw.arg == "status" or (kw.arg in ("update_fields", "fields") and "status" in named):
                    lines.append(node.lineno)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "set status" in node.value.lower():
            lines.append(node.lineno)
    return sorted(lines)


def test_only_the_outbox_writes_a_message_status():
    """The outbox owns message state: no module outside messaging/outbox writes a status."""
    found = {}
    for path in sorted([*REPO_ROOT.glob("messaging/**/*.py"), *REPO_ROOT.glob("web/**/*.py")]):
        relative = path.relative_to(REPO_ROOT).as_posix()
        if relative.startswith("messaging/outbox/") or "/migrations/" in relative:
            continue
        if lines := _status_writes(path.read_text()):
            found[relative] = lines
    assert found == {}, "status written outside messaging/outbox; add an outbox function and call it"


def test_the_status_write_finder_finds_each_kind_of_write():
    source = """
row.status = "queued"
Message.objects.filter(id=1).update(status=Status.QUEUED, lease_until=None)
row.save(update_fields=["status"])
cursor.execute("UPDATE delivery_message SET status = %s")
Message.objects.filter(status="dead").count()
"""
    assert _status_writes(source) == [2, 3, 4, 5]


def test_a_batch_of_new_keys_is_one_insert_without_a_read_first(make_user):
    """The usual batch (every key new) costs one INSERT, with no read before it (on SQLite the ids of several
    rows are read after it: see insert_rows); a batch with a key stored before still stores only what is new
    (test_record_many_stores_a_batch_in_order_once covers its results)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    user = make_user()
    batch = [to_record(user, f"n{n}") for n in range(3)]
    with CaptureQueriesContext(connection) as ctx:
        recs = outbox.record_many(batch)
    assert all(r.created for r in recs)
    statements = [q["sql"].split()[0].upper() for q in ctx.captured_queries]
    statements = [s for s in statements if s not in ("SAVEPOINT", "RELEASE")]  # the test's own transaction
    assert statements[0] == "INSERT" and statements.count("INSERT") == 1, statements
    assert statements.count("SELECT") == (1 if connection.vendor == "sqlite" else 0), statements


@pytest.mark.django_db(transaction=True)
def test_a_batch_in_one_statement_is_stored_without_a_transaction_of_its_own(make_user):
    """Outside a transaction a batch that fits one INSERT is that INSERT alone (atomic by itself, no BEGIN; on
    SQLite its ids are read after it); a batch of several statements is one transaction; inside the caller's
    transaction, a key stored before leaves that transaction usable (a savepoint), and the batch's new keys are
    stored."""
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    user = make_user()
    batch = [to_record(user, f"one{n}") for n in range(3)]
    with CaptureQueriesContext(connection) as ctx:
        assert all(r.created for r in outbox.record_many(batch))
    ids_read = ["SELECT"] if connection.vendor == "sqlite" else []
    assert [q["sql"].split()[0].upper() for q in ctx.captured_queries] == ["INSERT", *ids_read]

    many = [to_record(user, f"many{n}") for n in range(150)]  # SQLite: 999 parameters a statement
    assert connection.vendor != "sqlite" or outbox._rows_per_statement(connection, []) < len(many)
    with CaptureQueriesContext(connection) as ctx:
        assert all(r.created for r in outbox.record_many(many))
    statements = [q["sql"].split()[0].upper() for q in ctx.captured_queries]
    if statements.count("INSERT") > 1:  # SQLite's parameter limit (PostgreSQL takes the 150 in one statement)
        assert statements[0] in ("BEGIN", "SAVEPOINT"), statements

    with transaction.atomic():
        recs = outbox.record_many([to_record(user, "one0"), to_record(user, "fresh")])
        assert [r.created for r in recs] == [False, True]
        assert Message.objects.filter(idempotency_key="fresh").exists()  # the transaction still works
    assert Message.objects.filter(idempotency_key__startswith="many").count() == 150


def test_mark_sent_many_records_only_the_rows_the_claim_still_holds(make_user):
    user = make_user()
    ids = [r.message_id for r in outbox.record_many([to_record(user, f"h{n}") for n in range(2)])]
    policy = RetryPolicy(lease=timedelta(seconds=5))
    token = outbox.claim_many(ids, policy)[0].lease_token
    other = outbox.claim(ids[1], policy, now=timezone.now() + timedelta(seconds=6))  # its lease ran out: taken over
    assert outbox.mark_sent_many(token, [(ids[0], "p-1"), (ids[1], "p-2")]) == 1
    rows = {m.id: m for m in Message.objects.filter(id__in=ids)}
    assert (rows[ids[0]].status, rows[ids[0]].remote_id) == ("sent", "p-1")
    assert (rows[ids[1]].status, rows[ids[1]].lease_token, rows[ids[1]].remote_id) == ("sending", other.lease_token, "")


@pytest.mark.django_db(transaction=True)
def test_the_stores_writes_hold_no_sqlite_lock_once_their_statement_returns(make_user):
    """On SQLite a write that keeps its statement open (``INSERT ... RETURNING`` until its rows are read, or one
    statement per row inside BEGIN ... COMMIT) holds the database's write lock while its thread waits to run Python
    again, and every other writer sleeps in SQLite's busy handler meanwhile. Storing a message and recording sends
    are one step each: once a statement of theirs returns, another connection writes at once (no wait at all)."""
    import sqlite3

    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.skip("SQLite's write lock")
    user = make_user()
    other = sqlite3.connect(connection.settings_dict["NAME"], timeout=0, isolation_level=None)
    refused = []

    def write_beside(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if sql.split()[0].upper() in ("INSERT", "UPDATE"):
            try:
                other.execute("UPDATE accounts_user SET last_login = NULL WHERE id = -1")
            except sqlite3.OperationalError as exc:  # "database is locked"
                refused.append((sql.split()[0], str(exc)))
        return result

    try:
        with connection.execute_wrapper(write_beside):
            one = outbox.record_many([to_record(user, "alone")])
            several = outbox.record_many([to_record(user, f"s{n}") for n in range(3)])
            ids = [r.message_id for r in one + several]
            token = outbox.claim_many(ids)[0].lease_token
            assert outbox.mark_sent_many(token, [(mid, f"r{mid}") for mid in ids]) == len(ids)
    finally:
        other.close()
    assert refused == []
    assert sorted(Message.objects.filter(status="sent").values_list("id", flat=True)) == sorted(ids)
    assert {m.idempotency_key: m.id for m in Message.objects.all()} == {
        key: r.message_id for key, r in zip(["alone", "s0", "s1", "s2"], one + several, strict=True)
    }
