"""The load test (`make load`, not part of `make test`): real `ketafollow serve` processes on
loopback ports, a mix of patients, providers and an EHR client for a bounded time, then a check
that nothing acknowledged was lost. Figures, not assertions: docs/benchmarks.md "Load test".

- `servers.py`: a fresh migrated and seeded database (SQLite or PostgreSQL), extra patients, the
  server processes;
- `wire.py`: the small keep-alive HTTP/1.1 client and what it records per operation;
- `traffic.py`: who does what (the operations and their mix);
- `checks.py`: what the database and the EHR client's copy must hold afterwards;
- `__main__.py`: the configurations and the report.
"""
