"""Audit log: append-only through the ORM, hash-chained, tampering found by verify."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction
from fleetroom.accounts.models import User
from fleetroom.cli import app
from fleetroom.core import audit
from fleetroom.core.models import AppendOnlyError, AuditChainHead, AuditEvent
from fleetroom.core.scoping import SYSTEM
from fleetroom.tenancy import services
from pydantic import BaseModel, ConfigDict, ValidationError
from typer.testing import CliRunner

TABLE = AuditEvent._meta.db_table


@pytest.fixture
def tenant(db):
    op = services.do_create_tenant(None, "operator", "Platform", SYSTEM)
    return services.do_create_tenant(op, "dealer", "Dealer", SYSTEM)


@pytest.fixture
def chain(tenant):
    """Five events on the dealer's chain (seq 1 is tenant.created)."""
    for i in range(4):
        audit.record("test.event", tenant=tenant, actor=SYSTEM, data={"i": i})
    assert audit.verify_chain(tenant) == []
    return list(AuditEvent.objects.filter(tenant=tenant).order_by("seq"))


def raw(sql: str, *params) -> None:
    with connection.cursor() as cur:
        cur.execute(sql.replace("{t}", connection.ops.quote_name(TABLE)), params)


def kinds(problems) -> set[tuple[str, int | None]]:
    return {(p.kind, p.seq) for p in problems}


def test_record_fields_and_hash_chain(chain, tenant):
    user = User.objects.create_user(username="alice", email="a@example.com")
    ev = audit.record("test.event", tenant=tenant, actor=user, target=tenant,
                      data={"b": [1, "x"], "a": None}, ip="::ffff:192.0.2.1")
    assert ev.seq == 6
    assert ev.prev_hash == chain[-1].hash
    assert ev.actor_id == user.pk
    assert ev.actor_label == "alice"
    assert (ev.target_type, ev.target_id) == ("tenancy.tenant", str(tenant.pk))
    assert ev.ip == "192.0.2.1"
    head = AuditChainHead.objects.get(key=f"tenant:{tenant.pk}")
    assert (head.seq, head.last_hash) == (6, ev.hash)
    assert chain[0].action == "tenant.created"
    assert chain[0].prev_hash == "0" * 64
    assert audit.verify_chain() == []


def test_tenants_have_separate_chains(tenant):
    other = services.do_create_tenant(tenant.parent, "dealer", "Other", SYSTEM)
    audit.record("test.event", tenant=None, actor=None, data={})
    assert AuditEvent.objects.get(tenant=other).seq == 1
    assert AuditEvent.objects.get(chain="platform").seq == 1
    assert audit.verify_chain() == []


def test_orm_refuses_changes(chain):
    ev = chain[1]
    ev.action = "test.forged"
    with pytest.raises(AppendOnlyError):
        ev.save()
    with pytest.raises(AppendOnlyError):
        ev.delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(pk=ev.pk).update(action="test.forged")
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(pk=ev.pk).delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.bulk_create([AuditEvent(chain="x", seq=1)])
    with pytest.raises(AppendOnlyError):  # only record() inserts
        AuditEvent(chain="x", seq=1, created_at=ev.created_at).save()
    assert audit.verify_chain() == []


def test_raw_sql_update_is_detected(chain):
    raw("UPDATE {t} SET action = %s WHERE id = %s", "test.innocent", chain[2].pk)
    assert kinds(audit.verify_chain()) == {("modified", 3)}


def test_raw_sql_update_with_rehash_breaks_the_next_link(chain):
    ev = chain[2]
    forged = audit.event_hash(chain=ev.chain, seq=ev.seq, tenant_id=ev.tenant_id,
                              actor_id=ev.actor_id, actor_label=ev.actor_label,
                              action="test.innocent", target_type=ev.target_type,
                              target_id=ev.target_id, data=ev.data, ip=ev.ip,
                              created_at=ev.created_at, prev_hash=ev.prev_hash)
    raw("UPDATE {t} SET action = %s, hash = %s WHERE id = %s", "test.innocent", forged, ev.pk)
    assert kinds(audit.verify_chain()) == {("broken_link", 4)}


def test_deleted_row_is_detected(chain):
    raw("DELETE FROM {t} WHERE id = %s", chain[2].pk)
    assert kinds(audit.verify_chain()) == {("missing", 3), ("broken_link", 4)}


def test_deleted_tail_is_detected(chain):
    raw("DELETE FROM {t} WHERE id = %s", chain[-1].pk)
    assert kinds(audit.verify_chain()) == {("missing", 5)}


def test_swapped_hashes_are_detected(chain):
    a, b = chain[1], chain[2]
    raw("UPDATE {t} SET hash = %s WHERE id = %s", b.hash, a.pk)
    raw("UPDATE {t} SET hash = %s WHERE id = %s", a.hash, b.pk)
    found = kinds(audit.verify_chain())
    assert {("modified", 2), ("modified", 3)} <= found
    assert ("broken_link", 3) in found


def test_reordered_rows_are_detected(chain):
    a, b = chain[1], chain[2]
    raw("UPDATE {t} SET seq = %s WHERE id = %s", 10**12, a.pk)
    raw("UPDATE {t} SET seq = %s WHERE id = %s", 2, b.pk)
    raw("UPDATE {t} SET seq = %s WHERE id = %s", 3, a.pk)
    found = kinds(audit.verify_chain())
    assert {("modified", 2), ("modified", 3)} <= found


def test_row_beyond_head_and_lost_head_are_detected(chain, tenant):
    ev = chain[-1]
    raw("UPDATE {t} SET seq = %s WHERE id = %s", 99, ev.pk)
    found = kinds(audit.verify_chain(tenant))
    assert ("beyond_head", 99) in found
    assert ("missing", 5) in found
    AuditChainHead.objects.filter(key=f"tenant:{tenant.pk}").delete()
    assert ("no_head", None) in kinds(audit.verify_chain(tenant))


def test_data_is_validated(tenant):
    class Shaped(BaseModel):
        model_config = ConfigDict(extra="forbid")
        count: int

    audit.register_action("test.shaped", Shaped)
    audit.register_action("test.shaped", Shaped)  # idempotent
    with pytest.raises(ValueError):
        audit.register_action("test.shaped", BaseModel)
    ev = audit.record("test.shaped", tenant=tenant, actor=None, data={"count": "3"})
    assert ev.data == {"count": 3}
    with pytest.raises(ValidationError):
        audit.record("test.shaped", tenant=tenant, actor=None, data={"count": 1, "x": 2})
    with pytest.raises(TypeError):  # floats do not survive jsonb byte for byte
        audit.record("test.free", tenant=tenant, actor=None, data={"ratio": 0.5})
    with pytest.raises(TypeError):
        audit.record("test.free", tenant=tenant, actor=None, data={"when": object()})
    with pytest.raises(ValueError):
        audit.record("NotDotted", tenant=tenant, actor=None)
    # the tenancy events are registered by the app
    assert "tenant.moved" in audit.registered_actions()
    assert audit.verify_chain() == []


def test_unicode_and_nesting_survive_the_round_trip(tenant):
    audit.record("test.event", tenant=tenant, actor=None,
                 data={"name": "Müller – 東京", "deep": {"list": [1, [2, {"z": None}]]},
                       "big": 2**62, "neg": -1, "flag": False},
                 ip="2001:DB8:0:0:0:0:0:1")
    ev = AuditEvent.objects.filter(action="test.event").get()
    assert ev.ip == "2001:db8::1"
    assert audit.verify_chain() == []


def _record_then_fail(tenant):
    with transaction.atomic():
        audit.record("test.event", tenant=tenant, actor=None, data={})
        raise RuntimeError


def test_record_rolls_back_with_the_service(tenant):
    with pytest.raises(RuntimeError):
        _record_then_fail(tenant)
    assert not AuditEvent.objects.filter(action="test.event").exists()
    assert AuditChainHead.objects.get(key=f"tenant:{tenant.pk}").seq == 1
    audit.record("test.event", tenant=tenant, actor=None, data={})
    assert audit.verify_chain() == []


def test_cli_verify(chain):
    runner = CliRunner()
    ok = runner.invoke(app, ["audit", "verify"])
    assert ok.exit_code == 0, ok.output
    assert "audit log ok" in ok.output
    raw("UPDATE {t} SET target_id = %s WHERE id = %s", "42", chain[1].pk)
    bad = runner.invoke(app, ["audit", "verify"])
    assert bad.exit_code == 1
    assert "modified" in bad.output
    only = runner.invoke(app, ["audit", "verify", "--tenant", str(chain[0].tenant_id + 1000)])
    assert only.exit_code == 0


@pytest.mark.django_db(transaction=True)
def test_concurrent_appends_keep_one_valid_chain():
    """Threads appending to one chain at once: no duplicate seq, no fork, verify clean.

    On SQLite the BEGIN IMMEDIATE transactions queue on the write lock; on PostgreSQL
    the head row's SELECT ... FOR UPDATE does the same."""
    op = services.do_create_tenant(None, "operator", "Platform", SYSTEM)
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def worker(n: int) -> None:
        try:
            start.wait()
            for i in range(15):
                with transaction.atomic():
                    audit.record("test.concurrent", tenant=op, actor=None,
                                 data={"worker": n, "i": i})
                    audit.record("test.concurrent", tenant=None, actor=None,
                                 data={"worker": n, "i": i})
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert audit.verify_chain() == []
    seqs = list(AuditEvent.objects.filter(tenant=op).order_by("seq")
                .values_list("seq", flat=True))
    assert seqs == list(range(1, 62))
    assert AuditEvent.objects.filter(chain="platform").count() == 60
