"""Time-based work: APScheduler jobs, each a thin call into a `models/` operation."""
