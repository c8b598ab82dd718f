"""Test helpers shared by the suites (not shipped)."""
