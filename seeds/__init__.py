"""Seed data: instrument definitions (as data) and the demo clinic, loaded idempotently."""
