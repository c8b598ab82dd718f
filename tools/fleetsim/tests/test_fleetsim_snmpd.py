"""SnmpdFleet: net-snmp snmpd serving recordings on 127.x addresses, and nothing else."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from fleetroom_fleetsim import snmpd_fleet as sf
from fleetroom_fleetsim.snmpd_fleet import SnmpdFleet, SnmpdUser

SNMPD = sf.snmpd_binary()
needs_snmpd = pytest.mark.skipif(SNMPD is None, reason="net-snmp snmpd not installed")

SERIAL = "1.3.6.1.2.1.43.5.1.1.17.1"
SOME_OIDS = ["1.3.6.1.2.1.1.1.0", "1.3.6.1.2.1.1.2.0", "1.3.6.1.2.1.1.3.0", SERIAL,
             "1.3.6.1.2.1.2.2.1.6.1", "1.3.6.1.2.1.25.3.5.1.2.1", "1.3.6.1.2.1.43.10.2.1.4.1.1",
             "1.3.6.1.2.1.43.11.1.1.9.1.5", "1.3.6.1.2.1.43.11.1.1.8.1.5"]
USER = SnmpdUser("fleetuser", "SHA-256", "fleet-auth-secret", "AES-256", "fleet-priv-secret")
V3 = ["-v3", "-l", "authPriv", "-u", USER.name, "-a", "SHA-256", "-A", "fleet-auth-secret",
      "-x", "AES-256", "-X", "fleet-priv-secret"]


def rec(oid: str, tag: str, raw: str, enc: str = "", module: str = "") -> sf.Record:
    return sf.Record(oid, tag, enc, module, raw)


# --- configuration, no processes -------------------------------------------------


def test_override_lines_for_each_type():
    assert sf.override_line(rec("1.3.6.1.2.1.1.1.0", "4", "HP | x")) == \
        "override .1.3.6.1.2.1.1.1.0 octet_str 0x4850207c2078"
    assert sf.override_line(rec("1.3.6.1.2.1.1.4.0", "4", "")) == \
        'override .1.3.6.1.2.1.1.4.0 octet_str ""'
    assert sf.override_line(rec("1.3.6.1.2.1.25.3.5.1.2.1", "4", "2400", "x")) == \
        "override .1.3.6.1.2.1.25.3.5.1.2.1 octet_str 0x2400"
    assert sf.override_line(rec("1.3.6.1.2.1.1.5.0", "4", r"a\nb", "e")) == \
        "override .1.3.6.1.2.1.1.5.0 octet_str 0x610a62"
    assert sf.override_line(rec("1.3.6.1.2.1.1.2.0", "6", "1.3.6.1.4.1.11")) == \
        "override .1.3.6.1.2.1.1.2.0 object_id .1.3.6.1.4.1.11"
    assert sf.override_line(rec("1.2", "2", "-3")) == "override .1.2 integer -3"
    assert sf.override_line(rec("1.2", "65", "4294967295")) == "override .1.2 counter 4294967295"
    assert sf.override_line(rec("1.2", "66", "7")) == "override .1.2 uinteger 7"
    assert sf.override_line(rec("1.2", "67", "100")) == "override .1.2 timeticks 100"
    assert sf.override_line(rec("1.2", "65", "initial=42,rate=2", module="numeric")) == \
        "override .1.2 counter 42"
    assert sf.override_line(rec("1.2", "2", "value=9", module="writecache")) == \
        "override .1.2 integer 9"


@pytest.mark.parametrize(("record", "reason"), [
    (rec("1.2", "64", "c0000201", "x"), "IpAddress"),
    (rec("1.2", "70", "5"), "Counter64"),
    (rec("1.2", "5", ""), "Null"),
    (rec("1.2", "4", "61" * 3000, "x"), "octet string of 3000 bytes"),
    (rec("1.2", "65", "4294967296"), "out of range"),
    (rec("1.3.6.1.6.3.15.1.2.2.1.3.1", "4", "u"), "USM"),
    (rec("1.2", "2", "wait=5", module="delay"), "no static value"),
])
def test_unservable_records_are_skipped_with_a_reason(record, reason):
    out = sf.override_line(record)
    assert isinstance(out, sf.Skipped)
    assert reason in out.reason


def test_config_restricts_access_and_versions():
    records = [rec("1.3.6.1.2.1.1.1.0", "4", "x"), rec("1.3.6.1.2.1.1.1.0", "4", "dup")]
    text, skipped = sf.render_config(records, [("127.0.9.1", 161), ("127.0.9.2", 161)],
                                     versions=("1",), user=USER)
    assert "agentaddress 127.0.9.1:161,127.0.9.2:161\n" in text
    assert "group fleetsim_grp v1 fleetsim_sec" in text
    assert "v2c" not in text
    assert "createUser" not in text
    assert "view fleetsim excluded .1.3.6.1.6.3.15.1.2" in text
    assert [s.reason for s in skipped] == ["duplicate OID"]
    text3, _ = sf.render_config(records[:1], [("127.0.9.1", 161)], versions=("3",), user=USER)
    assert "createUser fleetuser SHA-256 fleet-auth-secret AES-256 fleet-priv-secret" in text3
    assert "rouser fleetuser priv -V fleetsim" in text3
    assert "com2sec" not in text3
    assert sf.snmpd_modules(("2c",)) == "override,vacm_conf"
    assert sf.snmpd_modules(("2c", "3")) == "override,vacm_conf,usmConf,usmUser"
    with pytest.raises(ValueError, match=r"127\.0\.0\.0/8"):
        sf.render_config(records, [("10.0.0.1", 161)])


def test_addresses_stay_on_loopback_and_skip_0_and_255():
    assert sf.loopback_addresses("127.0.10.254", 3) == ["127.0.10.254", "127.0.11.1", "127.0.11.2"]
    with pytest.raises(ValueError):
        sf.loopback_addresses("192.168.1.1", 1)
    with pytest.raises(ValueError):
        sf.loopback_addresses("127.255.255.250", 10)
    with pytest.raises(ValueError, match="at least 1"):
        SnmpdFleet([Path("x.snmprec")], per_process=0)


def test_endpoints_are_packed_within_snmpds_agentaddress_buffer():
    addrs = [(h, 161) for h in sf.loopback_addresses("127.0.10.1", 1000)]
    groups = sf.pack_endpoints(addrs)
    assert [a for g in groups for a in g] == addrs
    assert all(len(sf.agentaddress_spec(g)) <= sf.AGENTADDRESS_BUDGET for g in groups)
    assert min(len(g) for g in groups[:-1]) >= 140
    assert all(len(g) <= 10 for g in sf.pack_endpoints(addrs, per_process=10))
    with pytest.raises(ValueError, match="silently drop"):
        sf.render_config([], addrs[:200])


# --- running fleets ---------------------------------------------------------------


def sockets_of(pid: int) -> list[tuple[str, str]]:
    """(protocol, local address) of a process's sockets, as `ss` reports them."""
    out = []
    for proto in ("-u", "-t", "-w"):
        res = subprocess.run(["ss", "-H", "-a", "-n", "-p", proto], capture_output=True,
                             text=True, check=True)
        for line in res.stdout.splitlines():
            if f"pid={pid}," in line:
                out.append((proto, line.split()[3]))
    return out


@pytest.fixture(scope="module")
def fleet(synthetic_dir, loopback):
    recs = [synthetic_dir / f"{n}.snmprec"
            for n in ("demo-hp-clj-m479", "demo-kyocera-m3145", "demo-switch-cisco")]
    with SnmpdFleet(recs, base=loopback(211), user=USER) as f:
        yield f


@needs_snmpd
@pytest.mark.netsnmp
def test_get_returns_exactly_the_recorded_values(fleet, netsnmp, recording):
    net = fleet.endpoints[0].host.rsplit(".", 1)[0]
    assert [ep.host for ep in fleet.endpoints] == [f"{net}.1", f"{net}.2", f"{net}.3"]
    assert fleet.endpoints[0].port == (161 if os.geteuid() == 0 else 16161)
    for ep in fleet.endpoints[:2]:
        expected = recording(ep.recording.stem)
        oids = [oid for oid in SOME_OIDS if oid in expected.rows]
        assert len(oids) >= 7
        got = netsnmp.get(ep.address, oids, ["-v2c", "-c", ep.community])
        for oid in oids:
            assert got[oid] == expected.expected(oid), (ep.recording.name, oid)
        v1 = netsnmp.get(ep.address, SOME_OIDS[:3], ["-v1", "-c", ep.community])
        assert v1["1.3.6.1.2.1.1.1.0"] == expected.expected("1.3.6.1.2.1.1.1.0")


@needs_snmpd
@pytest.mark.netsnmp
def test_a_walk_returns_the_recording_and_nothing_of_snmpd(fleet, netsnmp, recording):
    for ep in fleet.endpoints:
        expected = recording(ep.recording.stem)
        walked = netsnmp.walk(ep.address, ["-v2c", "-c", ep.community])
        assert set(walked) == set(expected.rows), ep.recording.name
        assert all(walked[oid] == expected.expected(oid) for oid in expected.rows)
        assert fleet.skipped[ep.recording] == []
    switch = fleet.endpoints[2]
    assert all(oid.startswith("1.3.6.1.2.1.1.") for oid in netsnmp.walk(
        switch.address, ["-v2c", "-c", switch.community]))


@needs_snmpd
@pytest.mark.netsnmp
def test_v3_authpriv_sha256_aes256(fleet, netsnmp, recording):
    ep = fleet.endpoints[1]
    expected = recording(ep.recording.stem)
    got = netsnmp.get(ep.address, [SERIAL], V3)
    assert got[SERIAL] == expected.expected(SERIAL)
    walked = netsnmp.walk(ep.address, V3)
    assert set(walked) == set(expected.rows), "v3 sees no USM table either"
    weaker = netsnmp.run("snmpget", ["-v3", "-l", "authNoPriv", "-u", USER.name, "-a", "SHA-256",
                                     "-A", "fleet-auth-secret", ep.address, SERIAL])
    assert weaker.returncode != 0
    wrong = netsnmp.run("snmpget", [*V3[:-1], "not-the-priv-key", ep.address, SERIAL])
    assert wrong.returncode != 0


@needs_snmpd
@pytest.mark.netsnmp
def test_unknown_community_gets_no_answer(fleet, netsnmp):
    res = netsnmp.run("snmpget", ["-v2c", "-c", "private", fleet.endpoints[0].address, SERIAL])
    assert res.returncode != 0
    assert "Timeout" in res.stderr


@needs_snmpd
def test_only_loopback_sockets(fleet):
    assert len(fleet.pids) == 3
    for pid in fleet.pids:
        socks = sockets_of(pid)
        assert socks, pid
        assert all(local.startswith("127.") for _proto, local in socks), socks
        assert all(proto == "-u" for proto, _ in socks), "no SMUX/TCP listener"
        ours = sf.process_sockets(pid)
        assert [(p, h) for p, h, _ in ours if not h.startswith("127.")] == []
        if os.geteuid() == 0:  # bound port 161 as root, then dropped to nobody
            uid_line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                            if line.startswith("Uid:"))
            assert uid_line.split()[1:] == ["65534"] * 4


@needs_snmpd
def test_processes_are_gone_after_exit(synthetic_dir, loopback):
    with SnmpdFleet([synthetic_dir / "demo-utax-p4532.snmprec"], count=2, base=loopback(212),
                    per_process=1) as f:
        pids = f.pids
        assert len(pids) == 2
        assert all(Path(f"/proc/{p}").exists() for p in pids)
    assert not any(Path(f"/proc/{p}").exists() for p in pids)


@needs_snmpd
def test_start_failure_stops_what_was_started(synthetic_dir, monkeypatch, loopback):
    started: list[subprocess.Popen[bytes]] = []
    real_popen = subprocess.Popen

    def recording_popen(*args, **kwargs):
        proc = real_popen(*args, **kwargs)
        started.append(proc)
        return proc

    monkeypatch.setattr(sf.subprocess, "Popen", recording_popen)
    first = synthetic_dir / "demo-lexmark-ms621.snmprec"
    second = synthetic_dir / "demo-sharp-mx3071.snmprec"
    with SnmpdFleet([first], base=loopback(213), port=16199):
        # device 0 of this fleet wants the same address and port: its snmpd cannot bind,
        # while device 1 (another recording, another process) starts fine
        clash = SnmpdFleet([first, second], base=loopback(213), port=16199, startup_timeout=5)
        with pytest.raises(RuntimeError, match="snmpd"):
            clash.start()
        assert clash.pids == []
        assert len(started) == 3
        assert all(p.poll() is not None for p in started[1:]), "clash processes left running"
        assert started[0].poll() is None
    assert started[0].poll() is not None


@needs_snmpd
@pytest.mark.netsnmp
def test_v1_only_device_and_per_oid_fallback(synthetic_dir, netsnmp, loopback):
    path = synthetic_dir / "v1-missing.snmprec"
    with SnmpdFleet([path], base=loopback(214), versions=("1",), community="old") as f:
        ep = f.endpoints[0]
        both = netsnmp.run("snmpget", ["-v1", "-c", "old", ep.address, "1.3.6.1.2.1.1.1.0",
                                       SERIAL])
        assert "noSuchName" in both.stdout + both.stderr
        one = netsnmp.get(ep.address, ["1.3.6.1.2.1.1.1.0"], ["-v1", "-c", "old"])
        assert one["1.3.6.1.2.1.1.1.0"][0] == "OCTETS"
        v2 = netsnmp.run("snmpget", ["-v2c", "-c", "old", ep.address, "1.3.6.1.2.1.1.1.0"])
        assert "Timeout" in v2.stderr


@needs_snmpd
@pytest.mark.netsnmp
def test_v3_only_fleet_starts_and_refuses_communities(synthetic_dir, netsnmp, recording,
                                                      loopback):
    path = synthetic_dir / "demo-brother-hll5100.snmprec"
    with SnmpdFleet([path], base=loopback(215), versions=("3",), user=USER) as f:
        ep = f.endpoints[0]
        got = netsnmp.get(ep.address, [SERIAL], V3)
        assert got[SERIAL] == recording("demo-brother-hll5100").expected(SERIAL)
        v2 = netsnmp.run("snmpget", ["-v2c", "-c", "public", ep.address, SERIAL])
        assert "Timeout" in v2.stderr


@needs_snmpd
@pytest.mark.netsnmp
@pytest.mark.slow
def test_agentaddress_beyond_2559_characters_is_silently_dropped(synthetic_dir, netsnmp,
                                                                 tmp_path, loopback):
    """The measured snmpd limit behind the packing: one line per endpoint still ends
    up in one 2,560-byte buffer, and endpoints past it never answer, with no error."""
    assert SNMPD is not None
    records = sf.read_snmprec(synthetic_dir / "demo-switch-cisco.snmprec")
    hosts = sf.loopback_addresses(loopback(216), 170)
    lines = [f"agentaddress {h}:16161" for h in hosts]
    lines += ["com2sec s 127.0.0.0/8 public", "group g v2c s",
              'access g "" any noauth exact all none none', "view all included .1"]
    lines += [line for r in records if isinstance(line := sf.override_line(r), str)]
    conf = tmp_path / "snmpd.conf"
    conf.write_text("\n".join(lines) + "\n")
    (tmp_path / "persist").mkdir()
    env = {**os.environ, "MIBS": "", "SNMP_PERSISTENT_DIR": str(tmp_path / "persist")}
    proc = subprocess.Popen([SNMPD, "-f", "-C", "-c", str(conf), "-Lf", str(tmp_path / "log"),
                             "-I", "override,vacm_conf", "-p", str(tmp_path / "pid")], env=env)
    try:
        probes = {(h, 16161): sf.probe_packet(("2c",), "public", "1.3.6.1.2.1.1.1.0", i + 1)
                  for i, h in enumerate(hosts)}
        silent = sf.wait_until_answering(probes, time.monotonic() + 5, [proc])
        assert proc.poll() is None, (tmp_path / "log").read_text()
        fits = [h for i, h in enumerate(hosts)
                if len(sf.agentaddress_spec([(x, 16161) for x in hosts[:i + 1]]))
                <= sf.AGENTADDRESS_MAX_CHARS]
        assert 100 < len(fits) < len(hosts) - 10  # ~125-140, depending on address length
        assert not silent & {(h, 16161) for h in fits}
        assert {(h, 16161) for h in hosts[len(fits) + 1:]} <= silent
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    # so SnmpdFleet packs 170 such devices into two processes, and all answer
    with SnmpdFleet([synthetic_dir / "demo-switch-cisco.snmprec"], count=170,
                    base=loopback(217), port=16161, versions=("2c",)) as f:
        assert len(f.pids) == 2
        last = f.endpoints[-1]
        got = netsnmp.get(last.address, ["1.3.6.1.2.1.1.5.0"], ["-v2c", "-c", "public"])
        assert got["1.3.6.1.2.1.1.5.0"] == ("OCTETS", b"sw-core-01")
