"""Devices and readings (filled in by the inventory work)."""
