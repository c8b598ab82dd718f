"""Tenants, memberships and access codes (filled in by the tenancy work)."""
