"""What patients report between sessions: daily check-ins and side-effect reports
(CLINICAL.md §4), each screened for safety before it is stored.
"""
