"""Fleetroom package."""
