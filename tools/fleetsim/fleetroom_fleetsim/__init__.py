"""Simulated printer fleets on loopback: snmpsim for behaviour, snmpd for load."""
