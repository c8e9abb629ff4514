"""General-purpose processors (no provider)."""
