"""The identity layer: persons, their identifiers and how identifiers are checked and shown."""
