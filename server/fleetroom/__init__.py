"""Fleetroom server: the hosted side dealers and their customers log into."""
