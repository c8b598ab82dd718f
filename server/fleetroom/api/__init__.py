"""REST API (django-ninja): OpenAPI at /api/docs, per-user tokens scoped like the user."""
