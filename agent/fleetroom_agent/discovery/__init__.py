"""Discovery: turning what a technician typed into the addresses a scan may probe.

:mod:`.targets` parses target specs (CIDRs, ranges, addresses, hostnames), applies
exclusions, refuses ranges a scan must never touch, and caps the size of a scan before
a single packet is sent.
"""
