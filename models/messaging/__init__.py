"""Secure messaging between a patient and their care team: threads, messages, read state."""
