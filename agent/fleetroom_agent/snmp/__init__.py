"""SNMP access for the agent: a small interface of ours in front of a back-end.

Collection code imports only :mod:`.types` and :mod:`.client`; the pysnmp back-end
lives in :mod:`.pysnmp_backend` (SNMPv3 through pysnmp's engine, v1/v2c through
:mod:`.community`, pysnmp's message API over a socket of ours) so a faster one can
replace it without touching collection.
"""
