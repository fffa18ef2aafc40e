"""Surveys: the instruments as data and their scoring (CLINICAL.md §5, `instruments`), the
follow-up schedule as pure rules (`schedule`), the assignments and their transitions
(`assignments`), the jobs that open, remind and expire them (`delivery`), and the responses
(`responses`); the tables are `survey_records`.
"""
