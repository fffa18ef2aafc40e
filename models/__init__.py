"""The domain: Tortoise models and the operations on them, one module per area.

`MODEL_MODULES` lists every module that defines models; the database configuration and the
migrations are built from it, so a new area is registered here once.
"""

MODEL_MODULES: tuple[str, ...] = (
    "models.accounts",
    "models.audit",
    "models.session_families",
    "models.throttle",
    "models.events",
    "models.idempotency",
    "models.plan_records",
    "models.alerts",
    "models.dosing_records",
    "models.checkins",
    "models.side_effects",
    "models.instruments",
    "models.survey_records",
    "models.notifications",
    "models.messaging",
    "models.devices",
    "models.opioids",
    "models.safety.models",
    "models.mail",
    "models.enrolment",
    "models.password_reset",
    "models.totp",
)
