from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from models.alerts.alert_rules import AlertKind
from tortoise.fields.base import OnDelete
from uuid import uuid4
from tortoise import fields
from tortoise.indexes import Index

# Safety first (issue #15, CLINICAL.md §0-§8): the safety screen's record, heart rate and SpO2 on
# every reading, a clinic session's REMS fields, a dose taken offline despite failed checks (whose
# pre-dose reading may be missing), unscheduled survey responses, concomitant medications.
#
# On SQLite, altering a column rebuilds its table and drops the partial unique indexes that back
# the invariants of 0003: they are recreated here (tests/api/test_health.py checks they exist).
_INVARIANTS = [
    "CREATE UNIQUE INDEX IF NOT EXISTS dosing_session_one_in_progress ON dosing_session (patient_id) "
    "WHERE status = 'IN_PROGRESS'",
    "CREATE UNIQUE INDEX IF NOT EXISTS alert_one_active_per_rule ON alert (dedup_key) "
    "WHERE status IN ('OPEN', 'ACKNOWLEDGED')",
]


async def restore_invariants(apps, schema_editor) -> None:
    for statement in _INVARIANTS:
        await schema_editor.client.execute_script(statement)


class Migration(migrations.Migration):
    dependencies = [('ketafollow', '0007_offline_replay_times')]

    initial = False

    operations = [
        ops.CreateModel(
            name='SafetyScreening',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('patient', fields.ForeignKeyField('ketafollow.Patient', source_field='patient_id', db_constraint=True, to_field='id', related_name='safety_screenings', on_delete=OnDelete.RESTRICT)),
                ('operation', fields.CharField(max_length=64)),
                ('content', fields.JSONField(encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('screened_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('recorded_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('advice', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('record_type', fields.CharField(null=True, max_length=64)),
                ('record_id', fields.UUIDField(null=True)),
                ('refusal', fields.CharField(null=True, max_length=500)),
            ],
            options={'table': 'safety_screening', 'app': 'ketafollow', 'indexes': [Index(fields=['patient_id', 'screened_at'])], 'pk_attr': 'id'},
            bases=['Entity'],
        ),
        ops.AlterField(
            model_name='Alert',
            name='kind',
            field=fields.CharEnumField(description='PRE_DOSE_BP_ABOVE_CEILING: PRE_DOSE_BP_ABOVE_CEILING\nPRE_DOSE_CHECKLIST: PRE_DOSE_CHECKLIST\nPOST_DOSE_BP_HIGH: POST_DOSE_BP_HIGH\nNOT_BACK_TO_BASELINE: NOT_BACK_TO_BASELINE\nSESSION_ABANDONED: SESSION_ABANDONED\nSIDE_EFFECT: SIDE_EFFECT\nMISUSE_CONCERN: MISUSE_CONCERN\nCRISIS_LANGUAGE: CRISIS_LANGUAGE\nSURVEY_ANSWER: SURVEY_ANSWER\nSAFETY_CHECK_UNANSWERED: SAFETY_CHECK_UNANSWERED\nDOSED_DESPITE_FAILED_CHECKS: DOSED_DESPITE_FAILED_CHECKS\nLOW_OXYGEN_SATURATION: LOW_OXYGEN_SATURATION\nNEW_MEDICATION: NEW_MEDICATION', enum_type=AlertKind, max_length=40),
        ),
        ops.AlterField(
            model_name='DosingSession',
            name='pre_diastolic',
            field=fields.IntField(null=True),
        ),
        ops.AlterField(
            model_name='DosingSession',
            name='pre_measured_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AlterField(
            model_name='DosingSession',
            name='pre_systolic',
            field=fields.IntField(null=True),
        ),
        ops.AddField(
            model_name='DosingSession',
            name='dissociation_observed',
            field=fields.BooleanField(null=True),
        ),
        ops.AddField(
            model_name='DosingSession',
            name='dosed_despite_failed_checks',
            field=fields.BooleanField(default=False),
        ),
        ops.AddField(
            model_name='DosingSession',
            name='failed_checks',
            field=fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads),
        ),
        ops.AddField(
            model_name='DosingSession',
            name='interaction_warnings',
            field=fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads),
        ),
        ops.AddField(
            model_name='DosingSession',
            name='mid_diastolic',
            field=fields.IntField(null=True),
        ),
        ops.AddField(
            model_name='DosingSession',
            name='mid_heart_rate',
            field=fields.IntField(null=True),
        ),
        ops.AddField(
            model_name='DosingSession',
            name='mid_measured_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='DosingSession',
            name='mid_spo2',
            field=fields.IntField(null=True),
        ),
        ops.AddField(
            model_name='DosingSession',
            name='mid_systolic',
            field=fields.IntField(null=True),
        ),
        ops.AddField(
            model_name='DosingSession',
            name='post_heart_rate',
            field=fields.IntField(null=True),
        ),
        ops.AddField(
            model_name='DosingSession',
            name='post_spo2',
            field=fields.IntField(null=True),
        ),
        ops.AddField(
            model_name='DosingSession',
            name='pre_heart_rate',
            field=fields.IntField(null=True),
        ),
        ops.AddField(
            model_name='DosingSession',
            name='pre_spo2',
            field=fields.IntField(null=True),
        ),
        ops.AddField(
            model_name='DosingSession',
            name='ready_to_leave_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='DosingSession',
            name='recorded_by_id',
            field=fields.UUIDField(null=True),
        ),
        ops.AddField(
            model_name='DosingSession',
            name='respiratory_depression',
            field=fields.BooleanField(null=True),
        ),
        ops.AddField(
            model_name='DosingSession',
            name='sedation_observed',
            field=fields.BooleanField(null=True),
        ),
        ops.AddField(
            model_name='DosingSession',
            name='setting',
            field=fields.CharField(default='AT_HOME', max_length=16),
        ),
        ops.AddField(
            model_name='SurveyResponse',
            name='intended_assignment_id',
            field=fields.UUIDField(null=True),
        ),
        ops.AddField(
            model_name='SurveyResponse',
            name='session_id',
            field=fields.UUIDField(null=True),
        ),
        ops.AddField(
            model_name='SurveyResponse',
            name='timing',
            field=fields.CharField(null=True, max_length=8),
        ),
        ops.AddField(
            model_name='TreatmentPlan',
            name='concomitant_medications',
            field=fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads),
        ),
        ops.RunPython(restore_invariants),
    ]
