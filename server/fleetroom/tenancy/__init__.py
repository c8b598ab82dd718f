"""Fleetroom tenancy app."""
