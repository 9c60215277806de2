"""Transport (交通): transit cards linked to persons, rail commuter passes and monthly trip counts (summaries only)."""
