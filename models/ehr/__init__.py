"""EHR sync: the change feed, consent to share, and our records as FHIR R4 resources
(PRODUCT.md capability 10).
"""
