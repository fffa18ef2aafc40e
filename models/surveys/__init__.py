"""Surveys: the instruments as data and their scoring (CLINICAL.md §5), the follow-up schedule,
assignments and responses.
"""
