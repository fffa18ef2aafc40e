"""Alerts and triage: the rules that raise them (CLINICAL.md §7), raising once per rule and
source, the triage queue, acknowledgement and resolution.
"""
