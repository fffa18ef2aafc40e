"""Our records as FHIR R4 resources (PRODUCT.md capability 10, CLINICAL.md §4 and §11 codes).

Layout:
- `common`: the code systems, the builders of FHIR datatypes (`meta`, `reference`, `concept`,
  `instant`…), the patient-record access check (`owned_record`, `patient_row`), and the two shapes a
  mapping module declares its resources in: `Readable` (how `fhirResource(resourceType, id)`
  loads a resource for a viewer by its id, access checked there, and maps it) and `Records`
  (how a kind of record is rendered for the change feed and the patient Bundle).
- one mapping module per area, its pure mappers beside its declarations: `identity` (Patient,
  Practitioner, CareTeam), `care` (MedicationAdministration, a session's reading Observations,
  CarePlan, MedicationRequest), `reports` (check-in Observation, AdverseEvent), `alerts` (Flag),
  `messaging` (Communication), `outcomes` (MedicationStatement), `surveys`
  (QuestionnaireResponse, score Observation, Questionnaire), `consent` (Consent), `audit`
  (AuditEvent).
- `registry`: the declarations collected in one place, and the reads that look them up
  (`fhir_resource`, `patient_bundle`); the change feed (`models.ehr.changes`) renders through
  `registry.RECORDS`.

To add a resource type: write its mapper in its area's module, declare there a `Readable` with a
loader that checks access (`patient_row("Type", Model, mapper)` for a row of a patient's chart)
and, when its records reach the change feed and the Bundle, a `Records` (`patient_rows` for rows
that map one by one); then list them in `registry.READABLE` and `registry.RECORDS`. A type several
records map to gets one `Readable` per shape of its ids (`claims`), listed most specific first.
The change feed's GraphQL enum (`schema.fhir.ResourceType`) lists what the feed may carry.
"""
