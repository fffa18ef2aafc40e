"""Opioids and outcomes: the opioid log and morphine milligram equivalents (CLINICAL.md §10),
baselines, and the outcome measures of a patient and a panel.
"""
