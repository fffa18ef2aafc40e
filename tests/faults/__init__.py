"""`make faults`: two `ketafollow serve` replicas on PostgreSQL and Redis, each backend behind a TCP
proxy of the suite's own (tests/faults/proxy.py) that cuts or hangs it; clients that retry with
idempotency keys, live and resuming subscribers, and the checks of issue #20 (see __main__.py and
docs/operations.md, Fault suite). Loopback only."""
