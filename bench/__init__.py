"""Fleetroom benchmark suite: ``make bench`` (``uv run python -m bench.run``).

Measures the agent against the net-snmp command-line tools on a simulated fleet of
net-snmp ``snmpd`` processes on 127.0.0.0/8, in one run, side by side:

* full poll of every device (v2c and SNMPv3 authPriv SHA-256/AES-256),
* the one-PDU status cycle (and a packet count proving it is one PDU),
* the discovery sweep of a /16 where almost nothing answers, against a full scan
  of a smaller range and against ``snmpget`` per address.

Every measurement runs in a fresh worker process (:mod:`bench.worker`) so its CPU
time and peak RSS belong to that measurement alone.  See :mod:`bench.run`.
"""
