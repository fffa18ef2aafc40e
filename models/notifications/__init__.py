"""Notifications to people: the outbox of notices, push devices, e-mail, quiet hours
(CLINICAL.md §6).
"""
