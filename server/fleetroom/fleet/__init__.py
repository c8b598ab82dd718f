"""Fleetroom fleet app."""
