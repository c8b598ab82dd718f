"""Fleetroom accounts app."""
