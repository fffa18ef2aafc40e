"""The shared kernel: what every area uses and none owns: the clock, typed errors, the base
table, idempotent writes, the event outbox, the audit log, clinic policy, backend faults.
"""
