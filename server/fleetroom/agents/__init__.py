"""Agents: enrollment, the signed ingest endpoint, commands and profile bundles."""
