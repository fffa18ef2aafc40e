from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from models.alerts.alert_rules import AlertKind, Severity
from models.alerts.alerts import AlertStatus
from models.care.dosing_records import SessionStatus
from models.kernel.events import Operation
from models.notifications.notifications import NotificationStatus
from models.care.plan_records import CareSetting, DoseUnit, Formulation, PlanStatus
from models.reports.side_effects import Grade
from models.surveys.survey_records import AssignmentStatus
from tortoise.fields.base import OnDelete
from uuid import uuid4
from tortoise import fields
from tortoise.indexes import Index


# Invariants the application checks, backed by the database so that a race cannot break them
# (partial unique indexes: the same SQL on SQLite and PostgreSQL). tests/api/test_health.py checks
# they exist: a later migration that rebuilds one of these tables on SQLite must recreate them.
_INVARIANTS = [
    # One current (ACTIVE or ON_HOLD) treatment plan per patient.
    "CREATE UNIQUE INDEX treatment_plan_one_current ON treatment_plan (patient_id) "
    "WHERE status IN ('ACTIVE', 'ON_HOLD')",
    # One dosing session in progress per patient.
    "CREATE UNIQUE INDEX dosing_session_one_in_progress ON dosing_session (patient_id) "
    "WHERE status = 'IN_PROGRESS'",
    # One open (or acknowledged) alert per rule, patient and source record.
    "CREATE UNIQUE INDEX alert_one_active_per_rule ON alert (dedup_key) "
    "WHERE status IN ('OPEN', 'ACKNOWLEDGED')",
]


async def add_invariants(apps, schema_editor) -> None:
    for statement in _INVARIANTS:
        await schema_editor.client.execute_script(statement)


class Migration(migrations.Migration):
    dependencies = [('ketafollow', '0002_identity_and_audit')]

    initial = False

    operations = [
        ops.CreateModel(
            name='Alert',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('patient', fields.ForeignKeyField('ketafollow.Patient', source_field='patient_id', db_constraint=True, to_field='id', related_name='alerts', on_delete=OnDelete.RESTRICT)),
                ('kind', fields.CharEnumField(description='PRE_DOSE_BP_ABOVE_CEILING: PRE_DOSE_BP_ABOVE_CEILING\nPRE_DOSE_CHECKLIST: PRE_DOSE_CHECKLIST\nPOST_DOSE_BP_HIGH: POST_DOSE_BP_HIGH\nNOT_BACK_TO_BASELINE: NOT_BACK_TO_BASELINE\nSESSION_ABANDONED: SESSION_ABANDONED\nSIDE_EFFECT: SIDE_EFFECT\nMISUSE_CONCERN: MISUSE_CONCERN\nCRISIS_LANGUAGE: CRISIS_LANGUAGE\nSURVEY_ANSWER: SURVEY_ANSWER\nSAFETY_CHECK_UNANSWERED: SAFETY_CHECK_UNANSWERED', enum_type=AlertKind, max_length=40)),
                ('severity', fields.CharEnumField(description='URGENT: URGENT\nHIGH: HIGH\nROUTINE: ROUTINE', enum_type=Severity, max_length=16)),
                ('severity_rank', fields.IntField()),
                ('status', fields.CharEnumField(default=AlertStatus.OPEN, description='OPEN: OPEN\nACKNOWLEDGED: ACKNOWLEDGED\nRESOLVED: RESOLVED', enum_type=AlertStatus, max_length=16)),
                ('summary', fields.CharField(max_length=500)),
                ('source_type', fields.CharField(max_length=64)),
                ('source_id', fields.UUIDField(null=True)),
                ('dedup_key', fields.CharField(db_index=True, max_length=300)),
                ('raised_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('respond_by', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('acknowledged_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('acknowledged_by_id', fields.UUIDField(null=True)),
                ('acknowledgement_note', fields.CharField(default='', max_length=2000)),
                ('resolved_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('resolved_by_id', fields.UUIDField(null=True)),
                ('resolution_note', fields.CharField(default='', max_length=2000)),
                ('escalation_level', fields.IntField(default=0)),
                ('escalated_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('version', fields.IntField(default=1)),
            ],
            options={'table': 'alert', 'app': 'ketafollow', 'indexes': [Index(fields=['status', 'severity_rank', 'respond_by'])], 'pk_attr': 'id'},
            bases=['Entity'],
        ),
        ops.CreateModel(
            name='AlertEscalation',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('alert', fields.ForeignKeyField('ketafollow.Alert', source_field='alert_id', db_constraint=True, to_field='id', related_name='escalations', on_delete=OnDelete.RESTRICT)),
                ('level', fields.IntField()),
                ('provider', fields.ForeignKeyField('ketafollow.Provider', source_field='provider_id', null=True, db_constraint=True, to_field='id', related_name='alert_escalations', on_delete=OnDelete.RESTRICT)),
                ('contact', fields.CharField(null=True, max_length=200)),
                ('escalated_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'alert_escalation', 'app': 'ketafollow', 'pk_attr': 'id', 'table_description': 'Who an overdue alert was escalated to, and when (the record CLINICAL.md §9 asks for).'},
            bases=['Entity'],
        ),
        ops.CreateModel(
            name='CheckIn',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('patient', fields.ForeignKeyField('ketafollow.Patient', source_field='patient_id', db_constraint=True, to_field='id', related_name='check_ins', on_delete=OnDelete.RESTRICT)),
                ('recorded_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('received_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('pain', fields.IntField()),
                ('mood', fields.IntField(null=True)),
                ('sleep', fields.IntField(null=True)),
                ('note', fields.TextField(default='', unique=False)),
            ],
            options={'table': 'check_in', 'app': 'ketafollow', 'indexes': [Index(fields=['patient_id', 'recorded_at'])], 'pk_attr': 'id'},
            bases=['Entity'],
        ),
        ops.CreateModel(
            name='DispatchCursor',
            fields=[
                ('name', fields.CharField(primary_key=True, unique=True, db_index=True, max_length=32)),
                ('last_seq', fields.BigIntField()),
            ],
            options={'table': 'dispatch_cursor', 'app': 'ketafollow', 'pk_attr': 'name', 'table_description': 'How far the shared dispatcher has published events (api.bus, Redis mode).'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='DomainEvent',
            fields=[
                ('seq', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('type', fields.CharField(max_length=64)),
                ('resource_type', fields.CharField(max_length=64)),
                ('resource_id', fields.UUIDField()),
                ('patient_id', fields.UUIDField(null=True, db_index=True)),
                ('operation', fields.CharEnumField(description='CREATED: CREATED\nUPDATED: UPDATED\nDELETED: DELETED', enum_type=Operation, max_length=8)),
                ('version', fields.IntField()),
                ('occurred_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('payload', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
            ],
            options={'table': 'domain_event', 'app': 'ketafollow', 'indexes': [Index(fields=['resource_type', 'resource_id'])], 'pk_attr': 'seq'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='IdempotencyKey',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('viewer_id', fields.UUIDField()),
                ('operation', fields.CharField(max_length=64)),
                ('key', fields.CharField(max_length=128)),
                ('request_hash', fields.CharField(max_length=64)),
                ('response', fields.JSONField(encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'idempotency_key', 'app': 'ketafollow', 'unique_together': (('viewer_id', 'operation', 'key'),), 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Instrument',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('code', fields.CharField(max_length=32)),
                ('version', fields.CharField(max_length=16)),
                ('definition', fields.JSONField(encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('loaded_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'instrument', 'app': 'ketafollow', 'unique_together': (('code', 'version'),), 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='MessageThread',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('patient', fields.ForeignKeyField('ketafollow.Patient', source_field='patient_id', db_constraint=True, to_field='id', related_name='message_threads', on_delete=OnDelete.RESTRICT)),
                ('subject', fields.CharField(max_length=120)),
                ('message_count', fields.IntField(default=0)),
                ('last_message_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'message_thread', 'app': 'ketafollow', 'indexes': [Index(fields=['patient_id', 'last_message_at'])], 'pk_attr': 'id'},
            bases=['Entity'],
        ),
        ops.CreateModel(
            name='Message',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('thread', fields.ForeignKeyField('ketafollow.MessageThread', source_field='thread_id', db_constraint=True, to_field='id', related_name='messages', on_delete=OnDelete.RESTRICT)),
                ('number', fields.IntField()),
                ('sender', fields.ForeignKeyField('ketafollow.User', source_field='sender_id', db_constraint=True, to_field='id', related_name='messages_sent', on_delete=OnDelete.RESTRICT)),
                ('body', fields.TextField(unique=False)),
                ('sent_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('reply_to_id', fields.UUIDField(null=True)),
            ],
            options={'table': 'message', 'app': 'ketafollow', 'unique_together': (('thread_id', 'number'),), 'pk_attr': 'id'},
            bases=['Entity'],
        ),
        ops.CreateModel(
            name='Notification',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('recipient_id', fields.UUIDField(db_index=True)),
                ('kind', fields.CharField(max_length=40)),
                ('link', fields.CharField(max_length=200)),
                ('dedup_key', fields.CharField(unique=True, max_length=200)),
                ('status', fields.CharEnumField(default=NotificationStatus.PENDING, description='PENDING: PENDING\nSENDING: SENDING\nSENT: SENT\nFAILED: FAILED\nCANCELLED: CANCELLED', enum_type=NotificationStatus, max_length=16)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('not_before', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('quiet_hours_zone', fields.CharField(null=True, max_length=64)),
                ('attempts', fields.IntField(default=0)),
                ('lease_until', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('sent_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('last_error', fields.CharField(null=True, max_length=300)),
            ],
            options={'table': 'notification', 'app': 'ketafollow', 'indexes': [Index(fields=['status', 'not_before'])], 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='SurveyAssignment',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('patient', fields.ForeignKeyField('ketafollow.Patient', source_field='patient_id', db_constraint=True, to_field='id', related_name='survey_assignments', on_delete=OnDelete.RESTRICT)),
                ('instrument', fields.CharField(max_length=32)),
                ('session_id', fields.UUIDField(null=True, db_index=True)),
                ('recurrence_key', fields.CharField(null=True, unique=True, max_length=120)),
                ('status', fields.CharEnumField(default=AssignmentStatus.SCHEDULED, description='SCHEDULED: SCHEDULED\nAVAILABLE: AVAILABLE\nCOMPLETED: COMPLETED\nEXPIRED: EXPIRED\nCANCELLED: CANCELLED', enum_type=AssignmentStatus, max_length=16)),
                ('available_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('expires_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('notify_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('reminder_times', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('reminders_sent', fields.IntField(default=0)),
                ('next_reminder_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('completed_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('response_id', fields.UUIDField(null=True)),
                ('version', fields.IntField(default=1)),
            ],
            options={'table': 'survey_assignment', 'app': 'ketafollow', 'unique_together': (('session_id', 'instrument'),), 'indexes': [Index(fields=['status', 'available_at']), Index(fields=['status', 'expires_at']), Index(fields=['status', 'next_reminder_at'])], 'pk_attr': 'id'},
            bases=['Entity'],
        ),
        ops.CreateModel(
            name='SurveyResponse',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('patient', fields.ForeignKeyField('ketafollow.Patient', source_field='patient_id', db_constraint=True, to_field='id', related_name='survey_responses', on_delete=OnDelete.RESTRICT)),
                ('assignment_id', fields.UUIDField(null=True, unique=True)),
                ('instrument', fields.CharField(max_length=32)),
                ('instrument_version', fields.CharField(max_length=16)),
                ('answers', fields.JSONField(encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('total_score', fields.DecimalField(null=True, max_digits=6, decimal_places=1)),
                ('severity', fields.CharField(null=True, max_length=32)),
                ('submitted_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'survey_response', 'app': 'ketafollow', 'indexes': [Index(fields=['patient_id', 'instrument', 'submitted_at'])], 'pk_attr': 'id'},
            bases=['Entity'],
        ),
        ops.CreateModel(
            name='ThreadReadState',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('thread', fields.ForeignKeyField('ketafollow.MessageThread', source_field='thread_id', db_constraint=True, to_field='id', related_name='read_states', on_delete=OnDelete.RESTRICT)),
                ('user', fields.ForeignKeyField('ketafollow.User', source_field='user_id', db_constraint=True, to_field='id', related_name='thread_read_states', on_delete=OnDelete.RESTRICT)),
                ('last_read_number', fields.IntField(default=0)),
                ('last_read_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'thread_read_state', 'app': 'ketafollow', 'unique_together': (('thread_id', 'user_id'),), 'pk_attr': 'id'},
            bases=['Entity'],
        ),
        ops.CreateModel(
            name='TreatmentPlan',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('patient', fields.ForeignKeyField('ketafollow.Patient', source_field='patient_id', db_constraint=True, to_field='id', related_name='treatment_plans', on_delete=OnDelete.RESTRICT)),
                ('prescriber', fields.ForeignKeyField('ketafollow.Provider', source_field='prescriber_id', db_constraint=True, to_field='id', related_name='treatment_plans', on_delete=OnDelete.RESTRICT)),
                ('formulation', fields.CharEnumField(description='SUBLINGUAL_TABLET: SUBLINGUAL_TABLET\nORAL: ORAL\nINTRANASAL_KETAMINE: INTRANASAL_KETAMINE\nINTRANASAL_ESKETAMINE: INTRANASAL_ESKETAMINE\nINTRAMUSCULAR: INTRAMUSCULAR\nINTRAVENOUS: INTRAVENOUS', enum_type=Formulation, max_length=32)),
                ('setting', fields.CharEnumField(description='AT_HOME: AT_HOME\nCLINIC: CLINIC', enum_type=CareSetting, max_length=16)),
                ('dose', fields.DecimalField(max_digits=8, decimal_places=2)),
                ('dose_unit', fields.CharEnumField(description='MG: MG\nMG_PER_KG: MG_PER_KG\nMG_PER_KG_PER_HOUR: MG_PER_KG_PER_HOUR', enum_type=DoseUnit, max_length=24)),
                ('sessions_per_week', fields.IntField()),
                ('min_hours_between_sessions', fields.IntField()),
                ('planned_sessions', fields.IntField()),
                ('monitor_required', fields.BooleanField(default=True)),
                ('bp_ceiling_systolic', fields.IntField()),
                ('bp_ceiling_diastolic', fields.IntField()),
                ('survey_schedule', fields.JSONField(encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('notes', fields.TextField(default='', unique=False)),
                ('status', fields.CharEnumField(description='ACTIVE: ACTIVE\nON_HOLD: ON_HOLD\nCOMPLETED: COMPLETED\nCANCELLED: CANCELLED', enum_type=PlanStatus, max_length=16)),
                ('status_reason', fields.CharField(default='', max_length=500)),
                ('status_changed_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('version', fields.IntField(default=1)),
            ],
            options={'table': 'treatment_plan', 'app': 'ketafollow', 'pk_attr': 'id'},
            bases=['Entity'],
        ),
        ops.CreateModel(
            name='DosingSession',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('patient', fields.ForeignKeyField('ketafollow.Patient', source_field='patient_id', db_constraint=True, to_field='id', related_name='dosing_sessions', on_delete=OnDelete.RESTRICT)),
                ('plan', fields.ForeignKeyField('ketafollow.TreatmentPlan', source_field='plan_id', db_constraint=True, to_field='id', related_name='dosing_sessions', on_delete=OnDelete.RESTRICT)),
                ('status', fields.CharEnumField(description='IN_PROGRESS: IN_PROGRESS\nCOMPLETED: COMPLETED\nABANDONED: ABANDONED\nENTERED_IN_ERROR: ENTERED_IN_ERROR', enum_type=SessionStatus, max_length=16)),
                ('formulation', fields.CharField(max_length=32)),
                ('dose_mg', fields.DecimalField(max_digits=8, decimal_places=2)),
                ('lot_number', fields.CharField(null=True, max_length=64)),
                ('monitor_name', fields.CharField(null=True, max_length=100)),
                ('checklist', fields.JSONField(encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('started_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('pre_systolic', fields.IntField()),
                ('pre_diastolic', fields.IntField()),
                ('pre_measured_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('ended_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('post_systolic', fields.IntField(null=True)),
                ('post_diastolic', fields.IntField(null=True)),
                ('post_measured_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('dissociation', fields.IntField(null=True)),
                ('sedation', fields.IntField(null=True)),
                ('back_to_baseline', fields.BooleanField(null=True)),
                ('ended_early', fields.BooleanField(default=False)),
                ('notes', fields.TextField(default='', unique=False)),
                ('version', fields.IntField(default=1)),
            ],
            options={'table': 'dosing_session', 'app': 'ketafollow', 'indexes': [Index(fields=['patient_id', 'started_at'])], 'pk_attr': 'id'},
            bases=['Entity'],
        ),
        ops.CreateModel(
            name='SideEffectReport',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('patient', fields.ForeignKeyField('ketafollow.Patient', source_field='patient_id', db_constraint=True, to_field='id', related_name='side_effect_reports', on_delete=OnDelete.RESTRICT)),
                ('session', fields.ForeignKeyField('ketafollow.DosingSession', source_field='session_id', null=True, db_constraint=True, to_field='id', related_name='side_effect_reports', on_delete=OnDelete.RESTRICT)),
                ('code', fields.CharField(max_length=40)),
                ('grade', fields.CharEnumField(description='MILD: MILD\nMODERATE: MODERATE\nSEVERE: SEVERE\nLIFE_THREATENING: LIFE_THREATENING', enum_type=Grade, max_length=20)),
                ('onset_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('resolved_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('reported_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('note', fields.TextField(default='', unique=False)),
                ('version', fields.IntField(default=1)),
            ],
            options={'table': 'side_effect_report', 'app': 'ketafollow', 'indexes': [Index(fields=['patient_id', 'onset_at'])], 'pk_attr': 'id'},
            bases=['Entity'],
        ),
        ops.CreateModel(
            name='TreatmentPlanStatusChange',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('plan', fields.ForeignKeyField('ketafollow.TreatmentPlan', source_field='plan_id', db_constraint=True, to_field='id', related_name='status_history', on_delete=OnDelete.RESTRICT)),
                ('from_status', fields.CharEnumField(null=True, description='ACTIVE: ACTIVE\nON_HOLD: ON_HOLD\nCOMPLETED: COMPLETED\nCANCELLED: CANCELLED', enum_type=PlanStatus, max_length=16)),
                ('to_status', fields.CharEnumField(description='ACTIVE: ACTIVE\nON_HOLD: ON_HOLD\nCOMPLETED: COMPLETED\nCANCELLED: CANCELLED', enum_type=PlanStatus, max_length=16)),
                ('reason', fields.CharField(max_length=500)),
                ('changed_by_id', fields.UUIDField(null=True)),
                ('changed_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'treatment_plan_status_change', 'app': 'ketafollow', 'pk_attr': 'id'},
            bases=['Entity'],
        ),
        ops.RunPython(add_invariants),
    ]
