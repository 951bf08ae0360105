"""Results: how trials are shown, stored and compared (the result store, aggregation and
trend plots grow here)."""
