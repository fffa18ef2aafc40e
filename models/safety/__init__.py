"""Safety first (CLINICAL.md §0): the screen every patient-side write passes through before it can
be refused, the rules it applies to readings, answers and free text, and the record it keeps of
what it screened."""
