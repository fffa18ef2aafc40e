"""Plans and dosing: treatment plans (`plans`) and their limits (`plan_rules`), dosing sessions at
home (`dosing`) and in clinic (`clinic_sessions`), the pre-dose checks (`pre_dose`) and the
interactions surfaced before a dose (`medications`) (CLINICAL.md §1-§3, §8); the tables are
`plan_records` and `dosing_records`.
"""
