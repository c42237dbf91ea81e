"""HTTP only: routes, request parsing and validation, error -> status code mapping."""
