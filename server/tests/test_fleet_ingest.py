"""Ingest of real agent readings: stored values, idempotency, identity rules, counter
wraps, alert lifecycles, status, rejections.  Expected values come from the
recording files (by OID), never from the agent's output."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.utils import timezone
from fleetroom.accounts.models import User
from fleetroom.core.models import AuditEvent
from fleetroom.core.scoping import SYSTEM
from fleetroom.fleet import selectors
from fleetroom.fleet.models import (
    AlertRecord,
    CounterValue,
    Device,
    DeviceEvent,
    DeviceStatus,
    IdentityKind,
    Reading,
    StatusSample,
    SupplyLevel,
)
from fleetroom.fleet.services import (
    FOREIGN_DEVICE,
    IngestError,
    do_update_device,
    ingest_reading,
    ingest_readings,
    status_summary,
)
from fleetroom.tenancy.permissions import Permission
from fleetroom.tenancy.services import do_create_tenant, do_grant_membership
from fleetroom_protocol import Counter, Missing

from server.tests.test_fleet_support import (
    ALERT,
    COLORANT_VALUE,
    LIFE,
    SERIAL,
    SUPPLY,
    agent_reading,
    at,
    later,
    mac_of,
    make_tree,
    recording,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def tree():
    return make_tree()


def counts() -> dict[str, int]:
    models = (Device, Reading, CounterValue, SupplyLevel, AlertRecord, StatusSample,
              DeviceEvent, AuditEvent)
    return {m.__name__: m.objects.count() for m in models}


# --- stored values equal the recording ---------------------------------------------


def test_stored_values_equal_the_recording(tree):
    r = recording("demo-ricoh-imc3000")
    result = ingest_reading(agent_reading("demo-ricoh-imc3000"), tenant=tree["s1"])
    assert result.outcome == "stored"
    assert result.device_created
    device = Device.objects.get(pk=result.device_id)
    assert device.serial == rec_text(r, SERIAL)
    assert device.identity_kind == IdentityKind.SERIAL
    assert not device.identity_weak
    assert device.mac == mac_of(r)
    assert device.sys_name == rec_text(r, "1.3.6.1.2.1.1.5.0")
    assert device.sys_location == rec_text(r, "1.3.6.1.2.1.1.6.0")
    assert device.model is not None
    assert device.model.name in rec_text(r, "1.3.6.1.2.1.1.1.0")
    assert device.firmware == ""  # the recording has none: missing stays missing
    assert device.tenant == tree["s1"]
    assert device.last_reading_id == result.reading_id

    total = CounterValue.objects.get(reading_id=result.reading_id, name="total")
    # This demo counter is live in snmpsim (numeric variation: initial + rate × seconds
    # since the simulator started, see the recordings' README); the session's
    # simulator ran for less than ten minutes.
    tag, spec = r[LIFE]
    assert tag == "65:numeric"
    params = dict(p.split("=") for p in spec.split(","))
    initial, rate = int(params["initial"]), float(params["rate"])
    assert initial <= total.value <= initial + rate * 600
    assert total.width == 32  # prtMarkerLifeCount is a Counter32 (RFC 3805)
    assert total.delta is None  # first value: no usage can be given

    supplies = {s.supply_index: s for s in SupplyLevel.objects.filter(reading_id=result.reading_id)}
    rows = sorted(k.split(".")[1] for k in column(r, f"{SUPPLY}.9"))
    assert sorted(supplies) == rows
    for idx, s in supplies.items():
        level = rec_int(r, f"{SUPPLY}.9.1.{idx}")
        maximum = rec_int(r, f"{SUPPLY}.8.1.{idx}")
        assert (s.raw_level, s.raw_max) == (level, maximum)
        assert s.description == rec_text(r, f"{SUPPLY}.6.1.{idx}")
        colorant = rec_int(r, f"{SUPPLY}.3.1.{idx}")
        assert s.colour == (rec_text(r, f"{COLORANT_VALUE}.{colorant}") if colorant else "")
        if level >= 0 and maximum > 0:
            assert s.level_percent == pytest.approx(100 * level / maximum)
        else:  # a sentinel (-3 some remaining): never turned into a number
            assert s.level_percent is None

    table = AlertRecord.objects.filter(device=device, source="prtAlertTable")
    expected = sorted(int(k.split(".")[1]) for k in column(r, f"{ALERT}.7"))
    assert sorted(a.alert_index for a in table) == expected
    assert all(a.closed_at is None for a in table)
    # hrDeviceStatus warning(3) (RFC 2790) with a warning alert: summary warning.
    assert rec_int(r, "1.3.6.1.2.1.25.3.2.1.5.1") == 3
    assert device.status == DeviceStatus.WARNING
    assert device.device_status == "warning"


def test_static_recording_values_are_stored_exactly(tree):
    r = recording("alerts")
    result = ingest_reading(agent_reading("alerts"), tenant=tree["s1"])
    assert CounterValue.objects.get(reading_id=result.reading_id).value == rec_int(r, LIFE)
    device = Device.objects.get(pk=result.device_id)
    assert (device.serial, device.mac) == (rec_text(r, SERIAL), mac_of(r))
    for a in AlertRecord.objects.filter(device=device, source="prtAlertTable"):
        idx = f"1.{a.alert_index}"
        assert a.description == rec_text(r, f"{ALERT}.8.{idx}")
        assert a.time_ticks == rec_int(r, f"{ALERT}.9.{idx}")
        assert a.group_index == rec_int(r, f"{ALERT}.5.{idx}")  # prtAlertGroupIndex
        assert a.location == rec_int(r, f"{ALERT}.6.{idx}")  # prtAlertLocation
    # hrDeviceStatus down(5) (RFC 2790) and a critical alert: the summary is error.
    assert rec_int(r, "1.3.6.1.2.1.25.3.2.1.5.1") == 5
    assert device.status == DeviceStatus.ERROR


def test_payload_keeps_the_reading_exactly(tree):
    reading = agent_reading("demo-ricoh-imc3000")
    result = ingest_reading(reading, tenant=tree["s1"])
    row = Reading.objects.get(pk=result.reading_id)
    assert selectors.decode_payload(row.payload) == reading
    assert len(bytes(row.payload)) < len(reading.to_json()) / 2  # compressed


def test_payloads_of_many_batches_are_each_readings_own(tree):
    # From the second batch on, payloads are encoded a batch ahead in a worker thread.
    base = agent_reading("demo-ricoh-imc3000")
    items = [later(base, i) for i in range(5)] + [agent_reading("alerts")]
    stored: dict[int, int] = {}
    summary = ingest_readings(items, tenant=tree["s1"], batch_size=2,
                              on_result=lambda pos, res: stored.__setitem__(pos, res.reading_id))
    assert summary.stored == 6
    for position, reading_id in stored.items():
        row = Reading.objects.get(pk=reading_id)
        assert selectors.decode_payload(row.payload) == items[position]


def test_new_device_row_has_the_model_defaults(tree):
    before = timezone.now()
    result = ingest_reading(agent_reading("demo-kyocera-m3145"), tenant=tree["s1"])
    device = Device.objects.get(pk=result.device_id)
    reading = Reading.objects.get(pk=result.reading_id)
    assert device.first_seen == device.last_seen == reading.taken_at
    assert before <= device.created_at <= timezone.now()
    assert (device.asset_number, device.cost_centre, device.location) == ("", "", None)
    assert device.identity_key.startswith("serial/")


# --- idempotency -------------------------------------------------------------------


def test_same_reading_twice_changes_nothing(tree):
    reading = agent_reading("alerts")
    first = ingest_reading(reading, tenant=tree["s1"])
    before = counts()
    device_before = Device.objects.values().get(pk=first.device_id)
    again = ingest_reading(agent_reading("alerts"), tenant=tree["s1"])
    assert again.outcome == "duplicate"
    assert again.device_id == first.device_id
    assert counts() == before
    assert Device.objects.values().get(pk=first.device_id) == device_before


def test_duplicates_inside_one_batch_and_across_batches(tree):
    ricoh = agent_reading("demo-ricoh-imc3000")
    items = [ricoh, agent_reading("alerts"), agent_reading("demo-ricoh-imc3000"),
             later(ricoh, 5)]
    summary = ingest_readings(items, tenant=tree["s1"], batch_size=2)
    assert (summary.stored, summary.duplicates, summary.new_devices) == (3, 1, 2)
    assert Reading.objects.count() == 3
    assert CounterValue.objects.count() == 3
    again = ingest_readings(items, tenant=tree["s1"], batch_size=3)
    assert (again.stored, again.duplicates, again.new_devices) == (0, 4, 0)
    assert Reading.objects.count() == 3


# --- identity rules ----------------------------------------------------------------


def test_ip_change_is_an_attribute_update(tree):
    first = agent_reading("demo-kyocera-m3145")
    a = ingest_reading(first, tenant=tree["s1"])
    b = ingest_reading(later(first, 10, ip="192.0.2.50"), tenant=tree["s1"])
    assert b.device_id == a.device_id
    assert not b.device_created
    device = Device.objects.get(pk=a.device_id)
    assert device.ip == "192.0.2.50"
    assert list(device.events.values_list("kind", flat=True)) == ["created"]


def test_older_reading_does_not_rewind_current_state(tree):
    first = agent_reading("demo-kyocera-m3145")
    new = later(first, 60, ip="192.0.2.60")
    ingest_reading(new, tenant=tree["s1"])
    late = ingest_reading(later(first, 30, ip="192.0.2.30"), tenant=tree["s1"])
    assert late.outcome == "stored"
    device = Device.objects.get(pk=late.device_id)
    assert device.ip == "192.0.2.60"
    assert device.last_seen == new.taken_at
    assert CounterValue.objects.get(reading_id=late.reading_id).delta is None


def test_serial_changed_under_the_same_mac_is_an_event(tree):
    old = agent_reading("demo-kyocera-m3145")
    a = ingest_reading(old, tenant=tree["s1"])
    replaced = later(old, 60, serial="NEWBOARD0001")
    b = ingest_reading(replaced, tenant=tree["s1"])
    assert b.device_created
    assert b.device_id != a.device_id
    ev = DeviceEvent.objects.get(device_id=b.device_id, kind="serial_changed")
    assert ev.details == {"old": old.identity.serial, "new": "NEWBOARD0001",
                          "other_device_id": a.device_id, "matched_on": "mac"}
    assert ev.reading_id == b.reading_id
    assert AuditEvent.objects.filter(action="device.serial_changed",
                                      target_id=str(b.device_id)).count() == 1


def test_serial_changed_under_the_same_address_when_no_mac(tree):
    old = agent_reading("demo-kyocera-m3145")
    a = ingest_reading(at(old, old.taken_at, mac=None, ip="192.0.2.7"), tenant=tree["s1"])
    b = ingest_reading(later(old, 5, mac=None, ip="192.0.2.7", serial="OTHER0002"),
                       tenant=tree["s1"])
    ev = DeviceEvent.objects.get(device_id=b.device_id, kind="serial_changed")
    assert ev.details["matched_on"] == "address"
    assert ev.details["other_device_id"] == a.device_id


def test_devices_at_different_macs_on_one_address_are_not_a_serial_change(tree):
    # snmpsim serves every recording at 127.0.0.1: distinct MACs, distinct devices.
    ingest_reading(agent_reading("demo-kyocera-m3145"), tenant=tree["s1"])
    ingest_reading(agent_reading("demo-ricoh-imc3000"), tenant=tree["s1"])
    assert Device.objects.count() == 2
    assert not DeviceEvent.objects.filter(kind="serial_changed").exists()


def test_missing_serial_is_a_weak_identity_never_invented(tree):
    r = recording("v1-missing")
    assert SERIAL not in r  # the recording has no prtGeneralSerialNumber
    reading = agent_reading("v1-missing")
    assert reading.identity.serial is None
    result = ingest_reading(reading, tenant=tree["s1"])
    device = Device.objects.get(pk=result.device_id)
    assert result.identity_weak
    assert device.identity_weak
    assert device.identity_kind == IdentityKind.MAC
    assert device.identity_key == f"mac/{tree['s1'].pk}/{mac_of(r)}"
    assert device.serial == ""
    assert Reading.objects.get(pk=result.reading_id).identity_weak
    # The same MAC in another tenant is another device: weak keys never cross tenants.
    other = ingest_reading(reading, tenant=tree["c2"])
    assert other.device_id != result.device_id


def test_weak_device_learns_its_serial(tree):
    reading = agent_reading("v1-missing")
    weak = ingest_reading(reading, tenant=tree["s1"])
    strong = ingest_reading(later(reading, 5, serial="LEARNT0001", manufacturer="HP"),
                            tenant=tree["s1"])
    assert strong.device_id == weak.device_id
    device = Device.objects.get(pk=weak.device_id)
    assert not device.identity_weak
    assert device.identity_key == "serial/HP/LEARNT0001"
    assert "identity_upgraded" in strong.events


def test_known_device_read_without_serial_is_matched_by_mac(tree):
    reading = agent_reading("demo-kyocera-m3145")
    a = ingest_reading(reading, tenant=tree["s1"])
    b = ingest_reading(later(reading, 5, serial=None), tenant=tree["s1"])
    assert b.device_id == a.device_id
    assert b.identity_weak
    assert Device.objects.count() == 1
    assert Device.objects.get().serial == reading.identity.serial  # not erased


@pytest.mark.parametrize("placeholder", ["0000000000", "UNKNOWN", " n/a ", "XXXXXXXX"])
def test_placeholder_serials_are_not_identities(tree, placeholder):
    a = ingest_reading(at(agent_reading("demo-kyocera-m3145"), timezone.now(),
                          serial=placeholder), tenant=tree["s1"])
    assert a.identity_weak


def test_resold_device_moves_within_its_dealer_and_its_history_stays(tree):
    reading = at(agent_reading("demo-ricoh-imc3000"), timezone.now() - timedelta(days=2))
    c3 = do_create_tenant(tree["d1"], "customer", "Initech", SYSTEM)  # same dealer as s1
    a = ingest_reading(reading, tenant=tree["s1"])
    b = ingest_reading(later(reading, 60 * 24), tenant=c3)
    assert b.outcome == "stored"
    assert b.device_id == a.device_id
    device = Device.objects.get(pk=a.device_id)
    assert device.tenant == c3
    assert "moved" in b.events
    ev = DeviceEvent.objects.get(kind="moved")
    assert ev.details == {"from_tenant_id": tree["s1"].pk, "to_tenant_id": c3.pk}
    # An old reading arriving late does not move it back.
    ingest_reading(later(reading, 60), tenant=tree["s1"])
    device.refresh_from_db()
    assert device.tenant == c3
    # Each tenant sees its own part of the history, nothing of the other's.
    old_owner = User.objects.create_user(username="acme", email="acme@example.com")
    new_owner = User.objects.create_user(username="initech", email="initech@example.com")
    do_grant_membership(old_owner, tree["c1"], acting_user=SYSTEM, role="customer_viewer")
    do_grant_membership(new_owner, c3, acting_user=SYSTEM, role="customer_viewer")
    mine = Reading.objects.for_user(old_owner, Permission.VIEW_FLEET)
    assert sorted(mine.values_list("tenant_id", flat=True)) == [tree["s1"].pk] * 2
    assert list(selectors.devices(old_owner)) == []
    assert list(selectors.devices(new_owner)) == [device]
    theirs = CounterValue.objects.for_user(new_owner, Permission.VIEW_FLEET)
    assert list(theirs.values_list("reading_id", flat=True)) == [b.reading_id]


def test_another_dealers_agent_cannot_take_a_device_by_its_serial(tree):
    """Identity is global, so dealer two's agent quoting dealer one's serial would
    otherwise move the printer (and its future readings) into dealer two: refused,
    audited, nothing of either tenant written; other readings of the call go on."""
    reading = at(agent_reading("demo-ricoh-imc3000"), timezone.now() - timedelta(days=2))
    own = ingest_reading(reading, tenant=tree["s1"])
    other = at(agent_reading("demo-kyocera-m3145"), timezone.now() - timedelta(days=1))
    counts = (Reading.objects.count(), CounterValue.objects.count(), DeviceEvent.objects.count())
    summary = ingest_readings([later(reading, 60 * 24), other], tenant=tree["c2"])
    assert (summary.stored, summary.rejected) == (1, 1)
    (position, why), = summary.problems
    assert position == 0
    assert "another dealer" in why
    assert reading.identity.serial in why
    assert summary.problem_codes == {0: FOREIGN_DEVICE}
    device = Device.objects.get(pk=own.device_id)
    assert device.tenant == tree["s1"]
    assert not DeviceEvent.objects.filter(kind="moved").exists()
    # Only the other printer's reading (and its own creation event) was written.
    assert Reading.objects.count() == counts[0] + 1
    assert not Reading.objects.filter(device=device, tenant=tree["c2"]).exists()
    assert CounterValue.objects.filter(tenant=tree["c2"]).count() == len(other.counters)
    claim = AuditEvent.objects.get(action="device.claim_refused")
    assert claim.tenant_id == tree["c2"].pk  # the reporting tenant's chain
    assert claim.data["from_tenant_id"] == tree["s1"].pk
    assert claim.data["serial"] == reading.identity.serial
    # Once the operator has moved it (a device that really changed dealers), the
    # same reading is filed.
    do_update_device(device, acting_user=SYSTEM, tenant=tree["c2"], location=None, tags=[],
                     asset_number="", cost_centre="")
    again = ingest_reading(later(reading, 60 * 24), tenant=tree["c2"])
    assert (again.outcome, again.device_id) == ("stored", device.pk)


# --- counters ----------------------------------------------------------------------


def test_counter32_wrap_is_usage_and_an_event(tree):
    before_r, after_r = recording("counter-wrap-before"), recording("counter-wrap-wrapped")
    b, a = rec_int(before_r, LIFE), rec_int(after_r, LIFE)
    assert a < b  # the recording really wraps
    first = ingest_reading(agent_reading("counter-wrap-before"), tenant=tree["s1"])
    second = ingest_reading(agent_reading("counter-wrap-wrapped"), tenant=tree["s1"])
    assert second.device_id == first.device_id
    value = CounterValue.objects.get(reading_id=second.reading_id, name="total")
    assert value.value == a  # cumulative, as the device gave it
    assert value.delta == a + 2**32 - b
    ev = DeviceEvent.objects.get(kind="counter_wrapped")
    assert ev.details == {"counter": "total", "old_value": b, "new_value": a,
                          "delta": a + 2**32 - b, "width": 32}


def test_deltas_across_batches_follow_each_devices_last_reading(tree):
    # A batch takes the previous counters from what an earlier batch of the same call
    # wrote, unless the device has moved on since: then from the database.
    base = agent_reading("demo-kyocera-m3145")

    def at_total(minutes, total):
        r = later(base, minutes)
        r.counters = [Counter(name="total", value=total, unit="impressions", source="test",
                              width=32)]
        return r

    def concurrent_writer(position, result):
        if position == 1:  # another upload of the same device lands between batches
            ingest_reading(at_total(25, 1_300), tenant=tree["s1"])

    items = [at_total(10, 1_000), at_total(20, 1_100), at_total(30, 1_450),
             at_total(40, 1_500)]
    ids: dict[int, int] = {}

    def on_result(position, result):
        ids[position] = result.reading_id
        concurrent_writer(position, result)

    summary = ingest_readings(items, tenant=tree["s1"], batch_size=1, on_result=on_result)
    assert summary.stored == 4
    deltas = [CounterValue.objects.get(reading_id=ids[i]).delta for i in range(4)]
    assert deltas == [None, 100, 150, 50]  # 1,450 follows the concurrent 1,300


def test_counters_remembered_across_batches_are_bounded(monkeypatch):
    from fleetroom.fleet.services import _WrittenCounters

    monkeypatch.setattr(_WrittenCounters, "LIMIT", 2)
    t = timezone.now()
    known = _WrittenCounters()
    known.update({1: (10, t, {"total": (5, "impressions", 32)}), 2: (20, t, {})})
    known.update({1: (11, t, {}), 3: (30, t, {})})  # device 1 again: 2 is the oldest
    assert sorted(known.by_device) == [1, 3]
    assert known.get(1, 10, t) is None  # no longer its last reading
    assert known.get(1, 11, t) == {}
    assert known.get(3, 30, t + timedelta(seconds=1)) is None  # another reading's time


def test_counter_reset_is_no_usage_and_an_event(tree):
    reading = agent_reading("demo-kyocera-m3145")
    ingest_reading(reading, tenant=tree["s1"])
    reset = later(reading, 10)
    reset.counters = [Counter(name="total", value=12, unit="impressions", source="test",
                              width=32)]
    result = ingest_reading(reset, tenant=tree["s1"])
    assert CounterValue.objects.get(reading_id=result.reading_id).delta is None
    assert "counter_reset" in result.events


def test_counter_beyond_64_bits_is_kept_out_of_rows_with_a_warning(tree):
    reading = agent_reading("demo-kyocera-m3145")
    reading.counters.append(Counter(name="mono", value=2**64 - 1, unit="impressions",
                                    source="test", width=64))
    result = ingest_reading(reading, tenant=tree["s1"])
    assert result.outcome == "stored"
    assert any("counters.1.value" in w for w in result.warnings)
    assert list(CounterValue.objects.values_list("name", flat=True)) == ["total"]


# --- alerts and status -------------------------------------------------------------


def test_alerts_open_and_close_across_readings(tree):
    jam = agent_reading("alerts")  # critical jam + two toner-low warnings
    warn = agent_reading("alerts-warning")  # the same model with only the warnings
    r_jam, r_warn = recording("alerts"), recording("alerts-warning")
    assert set(column(r_warn, f"{ALERT}.7")) < set(column(r_jam, f"{ALERT}.7"))
    first = ingest_reading(jam, tenant=tree["s1"])
    device = Device.objects.get(pk=first.device_id)
    assert device.status == DeviceStatus.ERROR
    opened = {a.key: a.pk for a in AlertRecord.objects.filter(device=device)}
    assert len(opened) == len(jam.alerts)

    # Later, the same device reports what alerts-warning has: the jam has cleared.
    cleared = later(jam, 10)
    cleared.alerts, cleared.status = warn.alerts, warn.status
    second = ingest_reading(cleared, tenant=tree["s1"])
    closed = AlertRecord.objects.filter(device=device, closed_at__isnull=False)
    assert sorted(a.code for a in closed) == ["jam", "jammed"]
    assert all(a.closed_at == cleared.taken_at for a in closed)
    still = AlertRecord.objects.filter(device=device, closed_at__isnull=True)
    assert {a.pk for a in still} <= set(opened.values())  # same rows, not new ones
    assert {a.code for a in still} == {"markerTonerAlmostEmpty", "lowToner"}
    device.refresh_from_db()
    assert device.status == DeviceStatus.WARNING
    assert device.last_reading_id == second.reading_id

    # A reading whose alert table could not be read closes nothing.
    blind = later(jam, 20)
    blind.alerts, blind.status = [], warn.status.model_copy()
    blind.errors = [f"walk of {ALERT} stopped early: timeout"]
    ingest_reading(blind, tenant=tree["s1"])
    assert AlertRecord.objects.filter(device=device, source="prtAlertTable",
                                      closed_at__isnull=True).count() == 2

    # A complete reading without alerts closes the rest; nothing is reopened.
    calm = later(jam, 30)
    calm.alerts = []
    calm.status.device_status, calm.status.error_state_raw = "running", "0000"
    calm.status.error_flags = []
    ingest_reading(calm, tenant=tree["s1"])
    assert not AlertRecord.objects.filter(device=device, closed_at__isnull=True).exists()
    assert AlertRecord.objects.filter(device=device).count() == len(jam.alerts)
    device.refresh_from_db()
    assert device.status == DeviceStatus.OK
    history = list(StatusSample.objects.filter(device=device).order_by("taken_at")
                   .values_list("status", flat=True))
    assert history == ["error", "warning", "ok"]


def test_status_summary_does_not_guess():
    reading = agent_reading("demo-kyocera-m3145")
    reading.alerts, reading.status.device_status = [], None
    reading.status.printer_status = None
    reading.missing.append(Missing(field="alerts", reason="no-profile-rule"))
    assert status_summary(reading) == DeviceStatus.UNKNOWN


def test_not_reporting_is_marked_and_cleared_by_the_next_reading(tree):
    from fleetroom.fleet.services import do_mark_not_reporting

    reading = at(agent_reading("demo-kyocera-m3145"), timezone.now() - timedelta(hours=30))
    result = ingest_reading(reading, tenant=tree["s1"])
    assert do_mark_not_reporting(now=reading.taken_at + timedelta(hours=1)) == 0
    assert do_mark_not_reporting(now=reading.taken_at + timedelta(hours=25)) == 1
    device = Device.objects.get(pk=result.device_id)
    assert device.status == DeviceStatus.NOT_REPORTING
    ingest_reading(later(reading, 60 * 29), tenant=tree["s1"])
    device.refresh_from_db()
    # hrDeviceStatus warning(3) in the recording (RFC 2790): paper low.
    assert rec_int(recording("demo-kyocera-m3145"), "1.3.6.1.2.1.25.3.2.1.5.1") == 3
    assert device.status == DeviceStatus.WARNING
    assert list(device.status_samples.order_by("taken_at").values_list("status", flat=True)
                ) == ["warning", "not_reporting", "warning"]


# --- refusals ----------------------------------------------------------------------


def test_bad_readings_are_rejected_and_the_rest_stored(tree):
    good = agent_reading("demo-kyocera-m3145")
    no_identity = agent_reading("v1-missing")
    no_identity.identity.mac = no_identity.identity.ip = None
    no_identity.target = ""
    naive = later(good, 1)
    naive.taken_at = naive.taken_at.replace(tzinfo=None)
    future = at(good, timezone.now() + timedelta(days=365))
    too_long = later(good, 2, serial="S" * 500)
    summary = ingest_readings([no_identity, naive, good, future, too_long], tenant=tree["s1"])
    assert summary.stored == 1
    problems = dict(summary.problems)
    assert sorted(problems) == [0, 1, 3, 4]
    assert "no serial number, MAC address or network address" in problems[0]
    assert "time zone" in problems[1]
    assert "future" in problems[3]
    assert "identity.serial: longer than 128" in problems[4]


def test_readings_go_to_sites_or_customers_only(tree):
    with pytest.raises(IngestError, match="dealer"):
        ingest_reading(agent_reading("demo-kyocera-m3145"), tenant=tree["d1"])
    assert Reading.objects.count() == 0


def test_a_person_needs_manage_agents(tree):
    viewer = User.objects.create_user(username="v", email="v@example.com")
    do_grant_membership(viewer, tree["c1"], acting_user=SYSTEM, role="customer_viewer")
    with pytest.raises(PermissionDenied):
        ingest_reading(agent_reading("demo-kyocera-m3145"), tenant=tree["s1"],
                       acting_user=viewer)
    admin = User.objects.create_user(username="a", email="a@example.com")
    do_grant_membership(admin, tree["d1"], acting_user=SYSTEM, role="dealer_admin")
    result = ingest_reading(agent_reading("demo-kyocera-m3145"), tenant=tree["s1"],
                            acting_user=admin)
    assert result.outcome == "stored"
    discovered = AuditEvent.objects.get(action="device.discovered")
    assert discovered.actor_id == admin.pk
    assert discovered.data["devices"] == [
        {"id": result.device_id, "identity_key": Device.objects.get().identity_key}]


# --- recording helpers (independent of the agent) -----------------------------------


def rec_text(r, oid):
    from tests.support.recordings import text

    value = text(r, oid)
    assert value is not None, oid
    return value


def rec_int(r, oid):
    from tests.support.recordings import integer

    value = integer(r, oid)
    assert value is not None, oid
    return value


def column(r, prefix):
    from tests.support.recordings import column as col

    return col(r, prefix)


def test_a_chunk_that_loses_a_race_is_rolled_back_and_redone(tree, monkeypatch):
    from django.db import IntegrityError
    from fleetroom.fleet import services

    original = services._Chunk._flush
    calls = []

    def flush_losing_once(self, pending):
        calls.append(1)
        original(self, pending)  # everything written …
        if len(calls) == 1:  # … then a concurrent writer's row wins a constraint
            raise IntegrityError("simulated unique violation")

    monkeypatch.setattr(services._Chunk, "_flush", flush_losing_once)
    summary = ingest_readings([agent_reading("alerts"), agent_reading("demo-kyocera-m3145")],
                              tenant=tree["s1"])
    assert len(calls) == 2
    assert (summary.stored, summary.new_devices) == (2, 2)
    assert Device.objects.count() == 2
    assert Reading.objects.count() == 2
    assert AuditEvent.objects.filter(action="device.discovered").count() == 1
