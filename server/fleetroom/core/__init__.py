"""Cross-cutting pieces: tenant scoping, audit, security headers."""
