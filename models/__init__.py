"""The domain: Tortoise models and the operations on them, one package per area (see each
package's docstring): kernel, identity, care, reports, alerts, surveys, messaging, outcomes, ehr,
notifications, safety. Schema and jobs call an area's operations; an area's pure rules are
functions beside them.

`MODEL_MODULES` lists every module that defines models; the database configuration and the
migrations are built from it, so a new area is registered here once.
"""

MODEL_MODULES: tuple[str, ...] = (
    "models.identity.accounts",
    "models.kernel.audit",
    "models.identity.sign_in_records",
    "models.identity.throttle",
    "models.kernel.events",
    "models.kernel.idempotency",
    "models.care.plan_records",
    "models.alerts.alerts",
    "models.care.dosing_records",
    "models.reports.checkins",
    "models.reports.side_effects",
    "models.surveys.instruments",
    "models.surveys.survey_records",
    "models.notifications.notifications",
    "models.messaging.messaging",
    "models.notifications.devices",
    "models.outcomes.opioids",
    "models.safety.models",
    "models.notifications.mail",
    "models.identity.enrolment",
    "models.identity.password_reset",
    "models.identity.totp",
)
