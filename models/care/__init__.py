"""Plans and dosing: treatment plans and their limits, dosing sessions at home and in clinic,
the pre-dose checks and the interactions surfaced before a dose (CLINICAL.md §1-§3, §8).
"""
