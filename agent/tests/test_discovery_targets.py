"""Target specs: parsing, refusals, the address cap, exclusions, expansion, hostnames.

The property tests check the planner against a brute-force model (expand every spec
into a Python set and subtract), on sizes small enough for the model to be cheap.
The only network use is the OS resolver looking up ``localhost`` (/etc/hosts) and
``no-such-host.invalid`` (a reserved name that never resolves, RFC 6761).
"""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

import pytest
from fleetroom_agent.discovery.targets import (
    ALLOW_CATEGORIES,
    DEFAULT_MAX_ADDRESSES,
    ScanPlan,
    TargetSpec,
    TargetSpecError,
    parse_single_target,
    parse_spec,
    plan,
)
from fleetroom_agent.snmp.types import Target
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

IPV4_MAX = 2**32 - 1
IPV6_MAX = 2**128 - 1

# ------------------------------------------------------------------------- helpers


def addrs(p: ScanPlan) -> list[str]:
    return [t.address for t in p.addresses()]


async def collect(p: ScanPlan, resolver=None, timeout: float = 5.0) -> list:
    return [item async for item in p.targets(resolver, timeout=timeout)]


def fake_resolver(table: dict[str, Sequence[str]]):
    """A resolver answering from a dict, counting calls; unknown names fail like DNS."""
    calls: list[str] = []

    async def resolve(name: str) -> list[str]:
        calls.append(name)
        if name not in table:
            raise OSError(-2, "Name or service not known")
        return list(table[name])

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


def v4(n: int) -> str:
    return str(IPv4Address(n))


def v6(n: int) -> str:
    return str(IPv6Address(n))


# ---------------------------------------------------------------- example: syntax


@pytest.mark.parametrize(("text", "kind", "first", "last", "port"), [
    ("10.0.0.0/24", "cidr", "10.0.0.0", "10.0.0.255", None),
    ("  10.0.0.0/24 ", "cidr", "10.0.0.0", "10.0.0.255", None),
    ("10.0.0.0/255.255.255.0", "cidr", "10.0.0.0", "10.0.0.255", None),
    ("10.0.0.1-10.0.0.50", "range", "10.0.0.1", "10.0.0.50", None),
    ("10.0.0.1-50", "range", "10.0.0.1", "10.0.0.50", None),
    ("10.0.0.1 - 50", "range", "10.0.0.1", "10.0.0.50", None),
    ("10.0.0.7-7", "range", "10.0.0.7", "10.0.0.7", None),
    ("10.0.0.5", "address", "10.0.0.5", "10.0.0.5", None),
    ("10.0.0.5:1161", "address", "10.0.0.5", "10.0.0.5", 1161),
    ("::1", "address", "::1", "::1", None),
    ("[::1]", "address", "::1", "::1", None),
    ("[::1]:1161", "address", "::1", "::1", 1161),
    ("2001:db8::/120", "cidr", "2001:db8::", "2001:db8::ff", None),
    ("2001:db8::1-2001:db8::ff", "range", "2001:db8::1", "2001:db8::ff", None),
    ("fe80::1%eth0", "address", "fe80::1%eth0", "fe80::1%eth0", None),
    ("fe80::1%br-lan", "address", "fe80::1%br-lan", "fe80::1%br-lan", None),
    ("::ffff:10.0.0.5", "address", "10.0.0.5", "10.0.0.5", None),
    ("::ffff:10.0.0.0/120", "cidr", "10.0.0.0", "10.0.0.255", None),
])
def test_parse_address_specs(text, kind, first, last, port) -> None:
    spec = parse_spec(text)
    assert spec.kind == kind
    assert spec.first == ip_address(first)
    assert spec.last == ip_address(last)
    assert spec.port == port
    assert spec.hostname is None
    assert spec.text == text.strip()


@pytest.mark.parametrize(("text", "host", "port"), [
    ("localhost", "localhost", None),
    ("prn-acct-01", "prn-acct-01", None),
    ("prn-acct-01.corp.example:1161", "prn-acct-01.corp.example", 1161),
    ("PRN_Floor2.example.", "PRN_Floor2.example.", None),
])
def test_parse_hostnames(text, host, port) -> None:
    spec = parse_spec(text)
    assert (spec.kind, spec.hostname, spec.port, spec.first) == ("hostname", host, port, None)


@pytest.mark.parametrize(("text", "says"), [
    ("", "empty"),
    ("   ", "empty"),
    ("10.0.0.5/24", "host bits set; write the network as 10.0.0.0/24"),
    ("10.0.0.0/33", "not a valid CIDR"),
    ("10.0.0.300", "not a valid IPv4 address"),
    ("010.0.0.1", "not a valid IPv4 address"),
    ("10.0.0", "not a valid IPv4 address"),
    ("10.0.0.50-10.0.0.1", "runs backwards; write 10.0.0.1-10.0.0.50"),
    ("10.0.0.50-1", "runs backwards"),
    ("10.0.0.1-256", "must be 0-255"),
    ("10.0.0.1-::5", "cannot mix IPv4 and IPv6"),
    ("10.0.0.1-printer", "not a valid end for a range"),
    ("2001:db8::1-ff", "not a valid end for a range"),
    ("10.0.0.0/24:1161", "port can only follow a single address or hostname"),
    ("10.0.0.1-50:1161", "port can only follow"),
    ("10.0.0.1:0", "from 1 to 65535"),
    ("10.0.0.1:65536", "from 1 to 65535"),
    ("10.0.0.1:", "from 1 to 65535"),
    ("10.0.0.1:http", "from 1 to 65535"),
    ("[::1]:99999", "from 1 to 65535"),
    ("[::1", "not a bracketed IPv6 address"),
    ("[10.0.0.1]:1161", "brackets are for IPv6 addresses; write 10.0.0.1:1161"),
    ("[nope]", "not a valid IPv6 address"),
    ("2001:db8::zz", "not a valid IPv6 address"),
    ("printer one", "not an address, range, CIDR or hostname"),
    ("-printer", "not an address, range, CIDR or hostname"),
    ("a" * 64, "not an address, range, CIDR or hostname"),
])
def test_parse_errors_name_the_spec(text, says) -> None:
    with pytest.raises(TargetSpecError) as info:
        parse_spec(text)
    assert info.value.reason == "syntax"
    assert says in str(info.value)
    if text.strip():
        assert text.strip() in str(info.value)
    assert isinstance(info.value, ValueError)


def test_canonical_forms() -> None:
    assert str(parse_spec("10.0.0.1-50")) == "10.0.0.1-10.0.0.50"
    assert str(parse_spec("[2001:db8:0::5]:1161")) == "[2001:db8::5]:1161"
    assert str(parse_spec("10.0.0.5:161")) == "10.0.0.5:161"   # an explicit port stays
    assert str(parse_spec("2001:DB8::/120")) == "2001:db8::/120"
    assert parse_spec("10.0.0.1-50") == parse_spec("10.0.0.1-10.0.0.50")  # text not compared
    assert parse_spec("10.0.0.0/24").size == 256
    assert parse_spec("printer").size is None


# ------------------------------------------------------------ example: planning


def test_cidr_skips_network_and_broadcast_up_to_slash_30() -> None:
    assert addrs(plan(["10.0.0.0/30"])) == ["10.0.0.1", "10.0.0.2"]
    assert addrs(plan(["10.0.0.0/31"])) == ["10.0.0.0", "10.0.0.1"]
    assert addrs(plan(["10.0.0.7/32"])) == ["10.0.0.7"]
    p = plan(["192.168.1.0/24"])
    assert p.count == 254
    got = addrs(p)
    assert got[0] == "192.168.1.1"
    assert got[-1] == "192.168.1.254"
    # a range or a single address is taken literally: .0 and .255 may be devices there
    assert addrs(plan(["10.0.0.255", "10.0.1.0"])) == ["10.0.0.255", "10.0.1.0"]
    assert plan(["10.0.0.0-10.0.0.255"]).count == 256
    # allowing broadcast keeps the edges
    assert plan(["10.0.0.0/24"], allow={"broadcast"}).count == 256
    # IPv6 has no broadcast: nothing is skipped
    assert plan(["2001:db8::/126"]).count == 4


def test_targets_carry_ports() -> None:
    got = list(plan(["10.0.0.5", "10.0.0.6:1161", "[2001:db8::1]:1162", "10.0.0.0/30"],
                    default_port=16100).addresses())
    assert got == [Target("10.0.0.5", 16100), Target("10.0.0.6", 1161),
                   Target("2001:db8::1", 1162), Target("10.0.0.1", 16100),
                   Target("10.0.0.2", 16100)]


def test_same_address_on_different_ports_is_two_targets() -> None:
    p = plan(["127.0.0.1:16100", "127.0.0.1:16101", "127.0.0.1:16100"])
    assert [str(t) for t in p.addresses()] == ["127.0.0.1:16100", "127.0.0.1:16101"]


def test_overlapping_specs_are_deduplicated_first_spec_wins() -> None:
    p = plan(["10.0.0.10-20", "10.0.0.0/28", "10.0.0.0", "10.0.0.12"])
    # .10-.20; then the /28's .1-.14 minus what the range had; .0 was the /28's
    # skipped network address, so as a single address it is new; .12 is not
    assert p.count == 11 + 9 + 1
    assert addrs(p) == [v4(0x0A000000 + i) for i in [*range(10, 21), *range(1, 10), 0]]


def test_exclusions() -> None:
    p = plan(["10.0.0.0/24"], exclude=["10.0.0.100-10.0.0.199", "10.0.0.5", "10.0.0.0/29"])
    assert p.count == 254 - 100 - 7  # the /29 removes .1-.7 (.0 was never scanned)
    got = addrs(p)
    assert "10.0.0.150" not in got
    assert "10.0.0.5" not in got
    assert got[0] == "10.0.0.8"
    assert len(got) == len(set(got)) == p.count


def test_exclusion_with_port_only_removes_that_port() -> None:
    p = plan(["10.0.0.5", "10.0.0.5:1161"], exclude=["10.0.0.5:1161"])
    assert [str(t) for t in p.addresses()] == ["10.0.0.5"]
    p = plan(["10.0.0.5", "10.0.0.5:1161"], exclude=["10.0.0.5"])
    assert p.count == 0


def test_exclusions_may_be_huge_or_refused_blocks() -> None:
    assert plan(["10.0.0.0/24"], exclude=["0.0.0.0/0"]).count == 0
    assert plan(["10.0.0.0/24"], exclude=["224.0.0.0/4", "::/0"]).count == 254


def test_hostname_exclusion_is_refused() -> None:
    with pytest.raises(TargetSpecError, match="exclude its address instead"):
        plan(["10.0.0.0/24"], exclude=["printer.example.com"])


def test_cap_message_is_actionable() -> None:
    with pytest.raises(TargetSpecError) as info:
        plan(["10.0.0.0/8"])
    assert str(info.value) == ("10.0.0.0/8 has 16,777,216 addresses, more than the limit of "
                               "65,536; narrow it or raise --max-addresses")
    assert info.value.reason == "too-many"
    assert info.value.spec == "10.0.0.0/8"


def test_cap_counts_what_is_left_after_exclusions() -> None:
    p = plan(["10.0.0.0/15"], exclude=["10.1.0.0/16"])
    assert p.count == DEFAULT_MAX_ADDRESSES - 1  # .0.0 skipped, 10.1/16 excluded
    with pytest.raises(TargetSpecError, match=r"\(98,302 after exclusions and overlaps\)"):
        plan(["10.0.0.0/15"], exclude=["10.1.0.0/17"])


def test_cap_applies_to_the_total() -> None:
    with pytest.raises(TargetSpecError, match="the targets add up to 131,068 addresses"):
        plan(["10.0.0.0/16", "10.1.0.0/16"])
    # overlapping specs are counted once
    assert plan(["10.0.0.0/16", "10.0.0.0/17", "10.0.128.0/17"]).count == 65534
    with pytest.raises(TargetSpecError, match="each hostname counted as one"):
        plan(["10.0.0.0/30", "printer"], max_addresses=2)


def test_ipv6_cidr_is_capped() -> None:
    with pytest.raises(TargetSpecError, match="2001:db8::/64 has 18,446,744,073,709,551,616"):
        plan(["2001:db8::/64"])
    assert plan(["2001:db8::/112"]).count == 65536
    with pytest.raises(TargetSpecError, match="more than the limit"):
        plan(["2001:db8::/111"])


def test_huge_spec_is_measured_without_expanding() -> None:
    """A /8 under a raised cap is planned in constant memory and expands lazily."""
    tracemalloc.start()
    try:
        p = plan(["10.0.0.0/8", "10.0.0.0/9", "11.0.0.0/8"], exclude=["10.1.0.0/16"],
                 max_addresses=2**25)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert p.count == 2 * (2**24 - 2) - 65536
    assert peak < 256 * 1024
    first = list(zip(range(3), p.addresses(), strict=False))
    assert [t.address for _, t in first] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    # and the cap refuses ::/0 instantly even with everything allowed
    with pytest.raises(TargetSpecError, match=f"::/0 has {2**128:,} addresses"):
        plan(["::/0"], allow=ALLOW_CATEGORIES)


@pytest.mark.parametrize(("spec", "category", "says"), [
    ("0.0.0.0", "this-network", "'this network' (0.0.0.0/8)"),
    ("0.1.2.3", "this-network", "'this network'"),
    ("::", "this-network", "unspecified address"),
    ("224.0.0.1", "multicast", "multicast (224.0.0.0/4)"),
    ("239.255.255.250", "multicast", "multicast"),
    ("ff02::1", "multicast", "multicast (ff00::/8)"),
    ("255.255.255.255", "broadcast", "limited broadcast"),
    ("169.254.10.20", "link-local", "link-local (169.254.0.0/16)"),
    ("fe80::1", "link-local", "link-local (fe80::/10)"),
    ("[fe80::1%eth0]:1161", "link-local", "link-local"),
    ("::ffff:224.0.0.1", "multicast", "multicast"),
    ("223.255.255.250-224.0.0.5", "multicast", "overlaps multicast"),
    ("224.0.0.0/24", "multicast", "overlaps multicast"),
    ("169.254.0.0/16", "link-local", "overlaps link-local"),
    ("255.255.255.254/31", "broadcast", "overlaps the limited broadcast"),
    ("::/127", "this-network", "overlaps the unspecified"),
])
def test_refusals_name_spec_reason_and_flag(spec, category, says) -> None:
    with pytest.raises(TargetSpecError) as info:
        plan([spec])
    msg = str(info.value)
    assert info.value.reason == "refused"
    assert msg.startswith(f"{spec.strip()} is refused because it ")
    assert says in msg
    assert f"--allow {category}" in msg
    assert plan([spec], allow={category}).count >= 1


def test_cidr_whose_edge_is_the_limited_broadcast_is_fine() -> None:
    """Its edges are skipped, so it never reaches 255.255.255.255; allowing broadcast
    keeps the edges, which is then what was asked for."""
    assert addrs(plan(["255.255.255.0/24"]))[-1] == "255.255.255.254"
    assert addrs(plan(["255.255.255.0/24"], allow={"broadcast"}))[-1] == "255.255.255.255"


def test_refusal_looks_at_what_is_left_after_exclusions() -> None:
    with pytest.raises(TargetSpecError, match="overlaps link-local"):
        plan(["169.254.0.0-169.254.0.10"], exclude=["169.254.0.0-169.254.0.9"])
    assert plan(["169.254.0.0-169.254.0.10"], exclude=["169.254.0.0/16"]).count == 0
    assert plan(["223.255.255.0-224.0.0.255"], exclude=["224.0.0.0/4"]).count == 256


def test_a_single_string_is_not_a_list_of_specs() -> None:
    with pytest.raises(TypeError, match="list of specs"):
        plan("10.0.0.0/24")  # type: ignore[arg-type]


def test_loopback_is_allowed() -> None:
    assert addrs(plan(["127.0.0.1", "::1", "127.0.0.0/30"])) == \
        ["127.0.0.1", "::1", "127.0.0.2"]


def test_unknown_allow_category() -> None:
    with pytest.raises(TargetSpecError, match="cannot allow linklocal; choose from broadcast"):
        plan(["10.0.0.1"], allow={"linklocal"})


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_addresses"):
        plan(["10.0.0.1"], max_addresses=0)
    with pytest.raises(ValueError, match="default_port"):
        plan(["10.0.0.1"], default_port=0)


def test_plan_accepts_parsed_specs() -> None:
    spec = parse_spec("10.0.0.0/30")
    assert addrs(plan([spec])) == ["10.0.0.1", "10.0.0.2"]
    assert plan([TargetSpec("address", IPv4Address("10.0.0.9"), IPv4Address("10.0.0.9"))]
                ).count == 1


# ------------------------------------------------------------ example: hostnames


async def test_localhost_resolves_via_the_os_and_keeps_its_name() -> None:
    p = plan(["localhost:16100"])
    assert p.count == 0
    assert [h.hostname for h in p.hostnames] == ["localhost"]
    got = await collect(p)
    assert got
    for t in got:
        assert isinstance(t, Target), t
        assert t.hostname == "localhost"
        assert t.port == 16100
        assert ip_address(t.address).is_loopback
    assert len({t.address for t in got}) == len(got)


async def test_unresolvable_name_is_an_error_item_and_the_rest_goes_on() -> None:
    p = plan(["10.0.0.1", "no-such-host.invalid", "10.0.0.2"])
    t0 = time.monotonic()
    got = await collect(p)
    assert time.monotonic() - t0 < 5
    assert got[0] == Target("10.0.0.1")
    assert got[2] == Target("10.0.0.2")
    err = got[1]
    assert isinstance(err, TargetSpecError)
    assert err.reason == "unresolved"
    assert err.spec == "no-such-host.invalid"
    assert str(err).startswith("no-such-host.invalid could not be resolved (")
    assert "check the name or use its IP address" in str(err)


async def test_each_resolved_address_is_a_target_and_names_resolve_once() -> None:
    resolve = fake_resolver({"mfp": ["10.0.0.7", "2001:db8::7", "10.0.0.7"]})
    p = plan(["MFP", "mfp:1161", "10.0.0.9"])
    got = await collect(p, resolve)
    assert got == [Target("10.0.0.7", 161, "MFP"), Target("2001:db8::7", 161, "MFP"),
                   Target("10.0.0.7", 1161, "mfp"), Target("2001:db8::7", 1161, "mfp"),
                   Target("10.0.0.9")]
    assert resolve.calls == ["mfp"]


async def test_hostname_wins_over_an_address_spec_covering_it() -> None:
    resolve = fake_resolver({"printer": ["10.0.0.2"], "other": ["10.0.0.2"]})
    p = plan(["10.0.0.0/29", "printer", "other"])
    assert p.count == 6
    got = await collect(p, resolve)
    assert [str(t) for t in got] == ["10.0.0.1", "10.0.0.3", "10.0.0.4", "10.0.0.5",
                                     "10.0.0.6", "10.0.0.2"]
    assert got[-1].hostname == "printer"  # and 'other', the same device, is not repeated


async def test_resolved_addresses_obey_refusals_exclusions_and_the_cap() -> None:
    resolve = fake_resolver({
        "blocked": ["0.0.0.0"],               # what DNS filters answer for blocked names
        "excluded": ["10.9.9.9"],
        "mapped": ["::ffff:10.0.0.20"],
        "many": ["10.1.0.1", "10.1.0.2", "10.1.0.3"],
        "junk": ["not-an-ip"],
        "empty": [],
    })
    p = plan(["blocked", "excluded", "mapped", "many", "junk", "empty"],
             exclude=["10.9.0.0/16"], max_addresses=6)
    got = await collect(p, resolve)
    errors = [x for x in got if isinstance(x, TargetSpecError)]
    targets = [x for x in got if isinstance(x, Target)]
    assert targets == [Target("10.0.0.20", hostname="mapped"), Target("10.1.0.1", hostname="many"),
                       Target("10.1.0.2", hostname="many"), Target("10.1.0.3", hostname="many")]
    assert [e.reason for e in errors] == ["refused", "unresolved", "unresolved"]
    assert str(errors[0]).startswith("blocked resolves to 0.0.0.0, which is refused because it "
                                     "is 'this network'")
    assert "returned 'not-an-ip'" in str(errors[1])
    assert "no addresses" in str(errors[2])

    capped = plan(["10.0.0.1-4", "many"], max_addresses=6)
    got = await collect(capped, resolve)
    assert [x.reason for x in got if isinstance(x, TargetSpecError)] == ["too-many"]
    assert sum(isinstance(x, Target) for x in got) == 6


async def test_slow_resolver_times_out_as_an_error_item() -> None:
    async def hang(name: str) -> list[str]:
        await asyncio.sleep(60)
        return []

    got = await collect(plan(["slow", "10.0.0.1"]), hang, timeout=0.05)
    assert isinstance(got[0], TargetSpecError)
    assert "no answer within 0.05 s" in str(got[0])
    assert got[1] == Target("10.0.0.1")


async def test_parse_single_target() -> None:
    assert await parse_single_target("10.0.0.5") == Target("10.0.0.5")
    assert await parse_single_target("[::1]:1161") == Target("::1", 1161)
    local = await parse_single_target("localhost:16100")
    assert local.hostname == "localhost"
    assert local.port == 16100
    resolve = fake_resolver({"dual": ["0.0.0.0", "10.0.0.8", "10.0.0.9"]})
    assert await parse_single_target("dual", resolver=resolve) == Target("10.0.0.8",
                                                                         hostname="dual")
    with pytest.raises(TargetSpecError, match="is a cidr; give one address or hostname"):
        await parse_single_target("10.0.0.0/24")
    with pytest.raises(TargetSpecError, match="could not be resolved"):
        await parse_single_target("no-such-host.invalid")
    with pytest.raises(TargetSpecError, match="refused"):
        await parse_single_target("224.0.0.1")


# ----------------------------------------------------------------- properties

SMALL = settings(max_examples=150, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])

# A window of addresses so random specs and exclusions overlap each other.
WINDOW = 2048


@st.composite
def v4_block(draw, base: int) -> str:
    """A CIDR, range, short range or address inside ``[base, base + WINDOW)``."""
    kind = draw(st.sampled_from(["cidr", "range", "short", "address"]))
    if kind == "cidr":
        prefix = draw(st.integers(22, 32))
        start = draw(st.integers(base, base + WINDOW - 1)) & ~((1 << (32 - prefix)) - 1)
        return f"{v4(start)}/{prefix}"
    start = draw(st.integers(base, base + WINDOW - 1))
    if kind == "address":
        return v4(start)
    if kind == "short":
        end = draw(st.integers(start & 0xFF, 255))
        return f"{v4(start)}-{end}"
    end = draw(st.integers(start, min(base + WINDOW - 1, start + 700)))
    return f"{v4(start)}-{v4(end)}"


@st.composite
def v6_block(draw, base: int) -> str:
    kind = draw(st.sampled_from(["cidr", "range", "address"]))
    if kind == "cidr":
        prefix = draw(st.integers(118, 128))
        start = draw(st.integers(base, base + WINDOW - 1)) & ~((1 << (128 - prefix)) - 1)
        return f"{v6(start)}/{prefix}"
    start = draw(st.integers(base, base + WINDOW - 1))
    if kind == "address":
        return v6(start)
    end = draw(st.integers(start, min(base + WINDOW - 1, start + 700)))
    return f"{v6(start)}-{v6(end)}"


# Bases away from every refused block: 10/8-ish for IPv4, 2001:db8::/32 for IPv6.
V4_BASE = st.integers(0x0A000000, 0x0AFFFFFF - WINDOW).map(lambda n: n & ~0xFF)
V6_BASE = st.integers(0x20010DB8 << 96, (0x20010DB8 << 96) + 2**64).map(lambda n: n & ~0xFF)


@st.composite
def scenario(draw) -> tuple[list[str], list[str], bool]:
    """Specs and exclusions in one shared window, IPv4 or IPv6, plus 'allow broadcast'."""
    if draw(st.booleans()):
        base, block = draw(V4_BASE), v4_block
    else:
        base, block = draw(V6_BASE), v6_block
    specs = draw(st.lists(block(base), min_size=1, max_size=4))
    exclude = draw(st.lists(block(base), max_size=3))
    return specs, exclude, draw(st.booleans())


def model(specs: list[str], exclude: list[str], keep_edges: bool) -> list[list[int]]:
    """Brute force: per spec, its addresses minus exclusions and earlier specs."""
    gone: set[int] = set()
    for text in exclude:
        x = parse_spec(text)
        gone.update(range(int(x.first), int(x.last) + 1))
    seen: set[int] = set()
    out = []
    for text in specs:
        s = parse_spec(text)
        lo, hi = int(s.first), int(s.last)
        if (s.kind == "cidr" and s.first.version == 4 and s.prefixlen <= 30
                and not keep_edges):
            lo, hi = lo + 1, hi - 1
        mine = [a for a in range(lo, hi + 1) if a not in gone and a not in seen]
        seen.update(range(lo, hi + 1))
        out.append(mine)
    return out


@SMALL
@given(scenario())
def test_property_expansion_matches_count_and_model(case) -> None:
    """(a) exactly ``count`` unique addresses, all inside their spec, none excluded,
    ascending within each spec, specs in order."""
    specs, exclude, keep_edges = case
    p = plan(specs, exclude, allow={"broadcast"} if keep_edges else frozenset())
    got = [int(ip_address(t.address)) for t in p.addresses()]
    expected = model(specs, exclude, keep_edges)

    assert p.count == len(got) == len(set(got))
    assert got == [a for per_spec in expected for a in per_spec]
    parsed = [parse_spec(s) for s in specs]
    excluded = [parse_spec(x) for x in exclude]
    i = 0
    for spec, mine in zip(parsed, expected, strict=True):
        chunk = got[i:i + len(mine)]
        i += len(mine)
        assert chunk == sorted(chunk)
        assert all(int(spec.first) <= a <= int(spec.last) for a in chunk)
        assert not any(int(x.first) <= a <= int(x.last) for x in excluded for a in chunk)


# Every refused block as (category, first, last).
REFUSED = [
    ("this-network", 0, 0x00FFFFFF, 4),
    ("this-network", 0, 0, 6),
    ("multicast", 0xE0000000, 0xEFFFFFFF, 4),
    ("multicast", 0xFF << 120, IPV6_MAX, 6),
    ("broadcast", IPV4_MAX, IPV4_MAX, 4),
    ("link-local", 0xA9FE0000, 0xA9FEFFFF, 4),
    ("link-local", 0xFE80 << 112, (0xFEC0 << 112) - 1, 6),
]


@st.composite
def refused_spec(draw) -> tuple[str, str]:
    """A spec touching one refused block: an address in it (bare, bracketed with a
    port, or IPv4-mapped) or a range that starts in it."""
    category, lo, hi, version = draw(st.sampled_from(REFUSED))
    a = draw(st.integers(lo, hi))
    text = v4(a) if version == 4 else v6(a)
    form = draw(st.sampled_from(["bare", "port", "mapped", "range"]))
    if form == "port":
        text = f"{text}:1161" if version == 4 else f"[{text}]:1161"
    elif form == "mapped" and version == 4:
        text = f"::ffff:{text}"
    elif form == "range":
        b = draw(st.integers(a, min(hi, a + 300)))
        text = f"{text}-{v4(b) if version == 4 else v6(b)}"
    return category, text


@SMALL
@given(refused_spec())
def test_property_refused_categories(case) -> None:
    """(b) anything drawn from a refused block is refused, naming spec and flag, and
    accepted when that category is allowed."""
    category, text = case
    with pytest.raises(TargetSpecError) as info:
        plan([text])
    assert info.value.reason == "refused"
    assert str(info.value).startswith(f"{text} is refused because it ")
    assert f"--allow {category}" in str(info.value)
    assert plan([text], allow={category}).count >= 1


@SMALL
@given(st.sampled_from(REFUSED), st.data())
async def test_property_resolved_refused_address_is_an_error_item(block, data) -> None:
    category, lo, hi, version = block
    a = data.draw(st.integers(lo, hi))
    address = v4(a) if version == 4 else v6(a)
    resolve = fake_resolver({"dev": [address]})
    got = await collect(plan(["dev"]), resolve)
    assert len(got) == 1
    assert isinstance(got[0], TargetSpecError)
    assert f"--allow {category}" in str(got[0])
    got = await collect(plan(["dev"], allow={category}), resolve)
    assert got == [Target(address, hostname="dev")]


@st.composite
def sized_spec(draw) -> tuple[str, int]:
    """Any CIDR or range, of any size up to a whole address family, with its true
    scan size when everything is allowed (so edges are kept)."""
    version = draw(st.sampled_from([4, 6]))
    top = IPV4_MAX if version == 4 else IPV6_MAX
    bits = 32 if version == 4 else 128
    fmt = v4 if version == 4 else v6
    if draw(st.booleans()):
        prefix = draw(st.integers(0, bits))
        start = draw(st.integers(0, top)) & ~((1 << (bits - prefix)) - 1)
        return f"{fmt(start)}/{prefix}", 1 << (bits - prefix)
    size = draw(st.one_of(st.integers(1, 2**18), st.integers(1, top + 1)))
    start = draw(st.integers(0, top + 1 - size))
    return f"{fmt(start)}-{fmt(start + size - 1)}", size  # IPv4-mapped ends stay the size


@SMALL
@given(sized_spec(), st.one_of(st.integers(1, 2**18), st.integers(1, 2**129)))
def test_property_cap(case, cap) -> None:
    """(c) the cap is enforced exactly: over it is an error naming the size, at or under
    it never is; either way nothing is expanded (sizes reach 2**128)."""
    text, size = case
    if size > cap:
        with pytest.raises(TargetSpecError) as info:
            plan([text], max_addresses=cap, allow=ALLOW_CATEGORIES)
        assert info.value.reason == "too-many"
        assert str(info.value) == (f"{text} has {size:,} addresses, more than the limit of "
                                   f"{cap:,}; narrow it or raise --max-addresses")
    else:
        assert plan([text], max_addresses=cap, allow=ALLOW_CATEGORIES).count == size


@SMALL
@given(V4_BASE, st.integers(0, 32), st.integers(1, 2**33))
def test_property_cap_counts_scanned_addresses(base, prefix, cap) -> None:
    """Without ``broadcast`` allowed a /0-/30 scans two fewer than it spans, and the cap
    compares what is scanned (a /16 fits the default cap of 65,536 either way)."""
    span = 1 << (32 - prefix)
    start = base & ~(span - 1)
    text = f"{v4(start)}/{prefix}"
    lo, hi = (start + 1, start + span - 2) if prefix <= 30 else (start, start + span - 1)
    assume(not any(v == 4 and rlo <= hi and lo <= rhi for _, rlo, rhi, v in REFUSED))
    scanned = hi - lo + 1
    if scanned > cap:
        with pytest.raises(TargetSpecError, match="more than the limit"):
            plan([text], max_addresses=cap)
    else:
        assert plan([text], max_addresses=cap).count == scanned


LABEL = st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]|[a-z]", fullmatch=True)
HOSTNAME = st.lists(LABEL, min_size=1, max_size=4).map(".".join)
PORT = st.none() | st.integers(1, 65535)


@st.composite
def any_spec(draw) -> TargetSpec:
    """A spec built from parts, for the round trip."""
    kind = draw(st.sampled_from(["cidr", "range", "address", "hostname"]))
    if kind == "hostname":
        return TargetSpec("hostname", hostname=draw(HOSTNAME), port=draw(PORT))
    version = draw(st.sampled_from([4, 6]))
    top, bits = (IPV4_MAX, 32) if version == 4 else (IPV6_MAX, 128)
    make = IPv4Address if version == 4 else IPv6Address
    a = draw(st.integers(0, top))
    if version == 6:
        assume(make(a).ipv4_mapped is None)  # those are read as IPv4, by design
    if kind == "cidr":
        net = (IPv4Network if version == 4 else IPv6Network)(
            (a, draw(st.integers(0, bits))), strict=False)
        assume(version == 4 or net.prefixlen < 96
               or net.network_address.ipv4_mapped is None)
        return TargetSpec("cidr", net.network_address, net.broadcast_address,
                          prefixlen=net.prefixlen)
    if kind == "range":
        b = make(draw(st.integers(a, top)))
        assume(version == 4 or b.ipv4_mapped is None or make(a).ipv4_mapped is None)
        return TargetSpec("range", make(a), b)
    return TargetSpec("address", make(a), make(a), port=draw(PORT))


@settings(max_examples=300, deadline=None)
@given(any_spec())
def test_property_parse_round_trips(spec) -> None:
    """(d) ``str`` gives a spec back that parses to an equal spec, and is a fixed point."""
    text = str(spec)
    again = parse_spec(text)
    assert again == spec
    assert str(again) == text
    assert again.text == text
    assert parse_spec(f"  {text}\t") == spec


@settings(max_examples=200, deadline=None)
@given(st.integers(0x01000000, 0xDFFFFFFF), st.data())
def test_property_short_range_equals_long_range(a, data) -> None:
    end = data.draw(st.integers(a & 0xFF, 255))
    short = parse_spec(f"{v4(a)}-{end}")
    assert short == parse_spec(f"{v4(a)}-{v4((a & ~0xFF) | end)}")
    assert parse_spec(str(short)) == short


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_property_parse_never_crashes(text) -> None:
    """Whatever is typed, the answer is a spec or a TargetSpecError, nothing else."""
    try:
        spec = parse_spec(text)
    except TargetSpecError as exc:
        message = str(exc)
        assert message
    else:
        assert parse_spec(str(spec)) == spec
