from tortoise import migrations
from tortoise.migrations import operations as ops
from models.kernel.audit import ActorType, AuditAction, AuditOutcome
from tortoise.fields.base import OnDelete
from uuid import uuid4
from tortoise import fields
from tortoise.indexes import Index


# The audit log is append-only at the database level: not even a bug in the application (or
# someone with the application's credentials) can rewrite or erase it (45 CFR 164.312(b)).
_SQLITE_APPEND_ONLY = [
    "CREATE TRIGGER audit_event_no_update BEFORE UPDATE ON audit_event "
    "BEGIN SELECT RAISE(ABORT, 'audit_event is append-only'); END",
    "CREATE TRIGGER audit_event_no_delete BEFORE DELETE ON audit_event "
    "BEGIN SELECT RAISE(ABORT, 'audit_event is append-only'); END",
]
_POSTGRES_APPEND_ONLY = [
    "CREATE FUNCTION audit_event_append_only() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'audit_event is append-only'; END $$",
    "CREATE TRIGGER audit_event_no_change BEFORE UPDATE OR DELETE ON audit_event "
    "FOR EACH ROW EXECUTE FUNCTION audit_event_append_only()",
    "CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON audit_event "
    "FOR EACH STATEMENT EXECUTE FUNCTION audit_event_append_only()",
]
# One active consent per patient and client (the same SQL on SQLite and PostgreSQL).
_ONE_ACTIVE_CONSENT = (
    "CREATE UNIQUE INDEX data_sharing_consent_one_active ON data_sharing_consent "
    "(patient_id, api_client_id) WHERE revoked_at IS NULL"
)


async def harden_tables(apps, schema_editor) -> None:
    statements = _POSTGRES_APPEND_ONLY if schema_editor.DIALECT == "postgres" else _SQLITE_APPEND_ONLY
    for statement in [*statements, _ONE_ACTIVE_CONSENT]:
        await schema_editor.client.execute_script(statement)


class Migration(migrations.Migration):
    dependencies = [('ketafollow', '0001_initial')]

    initial = False

    operations = [
        ops.CreateModel(
            name='AuditEvent',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('occurred_at', fields.DatetimeField(db_index=True, auto_now=False, auto_now_add=False)),
                ('actor_type', fields.CharEnumField(description='USER: USER\nAPI_CLIENT: API_CLIENT\nANONYMOUS: ANONYMOUS\nSYSTEM: SYSTEM', enum_type=ActorType, max_length=16)),
                ('actor_id', fields.UUIDField(null=True)),
                ('actor_role', fields.CharField(null=True, max_length=16)),
                ('actor_label', fields.CharField(null=True, max_length=254)),
                ('patient_id', fields.UUIDField(null=True, db_index=True)),
                ('action', fields.CharEnumField(description='CREATE: C\nREAD: R\nUPDATE: U\nDELETE: D\nEXECUTE: E', enum_type=AuditAction, max_length=1)),
                ('resource_type', fields.CharField(max_length=64)),
                ('resource_id', fields.CharField(null=True, max_length=64)),
                ('operation', fields.CharField(null=True, max_length=100)),
                ('outcome', fields.CharEnumField(description='SUCCESS: SUCCESS\nDENIED: DENIED\nFAILED: FAILED', enum_type=AuditOutcome, max_length=16)),
                ('detail', fields.CharField(null=True, max_length=200)),
                ('client_address', fields.CharField(null=True, max_length=64)),
                ('request_id', fields.CharField(null=True, max_length=64)),
            ],
            options={'table': 'audit_event', 'app': 'ketafollow', 'indexes': [Index(fields=['patient_id', 'occurred_at'])], 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='DataSharingConsent',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('patient', fields.ForeignKeyField('ketafollow.Patient', source_field='patient_id', db_constraint=True, to_field='id', related_name='data_sharing_consents', on_delete=OnDelete.RESTRICT)),
                ('api_client', fields.ForeignKeyField('ketafollow.ApiClient', source_field='api_client_id', db_constraint=True, to_field='id', related_name='consents', on_delete=OnDelete.RESTRICT)),
                ('granted_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('revoked_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'data_sharing_consent', 'app': 'ketafollow', 'indexes': [Index(fields=['api_client_id', 'patient_id'])], 'pk_attr': 'id', 'table_description': 'Consent of a patient to share their record with one EHR client. Revoking keeps the row.'},
            bases=['Entity'],
        ),
        ops.CreateModel(
            name='KnownSignInAddress',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('subject', fields.CharField(max_length=300)),
                ('address', fields.CharField(max_length=64)),
                ('last_success_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'known_sign_in_address', 'app': 'ketafollow', 'unique_together': (('subject', 'address'),), 'pk_attr': 'id', 'table_description': 'An address an account signed in from successfully (exempts it from the account-wide lock).'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='LoginThrottle',
            fields=[
                ('key', fields.CharField(primary_key=True, unique=True, db_index=True, max_length=400)),
                ('failures', fields.IntField(default=0)),
                ('window_started_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('lock_count', fields.IntField(default=0)),
                ('locked_until', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'login_throttle', 'app': 'ketafollow', 'pk_attr': 'key'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='SessionFamily',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('user', fields.ForeignKeyField('ketafollow.User', source_field='user_id', db_constraint=True, to_field='id', related_name='session_families', on_delete=OnDelete.RESTRICT)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('expires_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('last_used_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('revoked_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('revoke_reason', fields.CharField(null=True, max_length=32)),
            ],
            options={'table': 'session_family', 'app': 'ketafollow', 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='RefreshToken',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('family', fields.ForeignKeyField('ketafollow.SessionFamily', source_field='family_id', db_constraint=True, to_field='id', related_name='tokens', on_delete=OnDelete.RESTRICT)),
                ('token_hash', fields.CharField(unique=True, max_length=64)),
                ('issued_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('idle_expires_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('rotated_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'refresh_token', 'app': 'ketafollow', 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.RunPython(harden_tables),
    ]
