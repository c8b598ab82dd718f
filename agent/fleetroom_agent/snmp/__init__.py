"""SNMP access for the agent: a small interface of ours in front of a back-end.

Collection code imports only :mod:`.types` and :mod:`.client`; the pysnmp back-end
lives in :mod:`.pysnmp_backend` so a faster one can replace it without touching
collection.
"""
