from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

# On PostgreSQL a sequence value is taken when a row is inserted, not when its transaction commits:
# seq 8 can be visible while seq 7 is still in flight. The change feed therefore orders events by
# the id of the transaction that wrote them and serves only those below the oldest transaction
# still running (models.ehr.changes). The trigger fills the column whatever the INSERT says.
_POSTGRES_XID = [
    "UPDATE domain_event SET xid = 0 WHERE xid IS NULL",  # written (and committed) before this migration
    "CREATE FUNCTION domain_event_set_xid() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN NEW.xid := pg_current_xact_id()::text::bigint; RETURN NEW; END $$",
    "CREATE TRIGGER domain_event_xid BEFORE INSERT ON domain_event "
    "FOR EACH ROW EXECUTE FUNCTION domain_event_set_xid()",
    "CREATE INDEX domain_event_feed_order ON domain_event (xid, seq)",
    "CREATE INDEX domain_event_resource_version ON domain_event (resource_type, resource_id, version, seq)",
]
_SQLITE_INDEXES = [
    "CREATE INDEX domain_event_resource_version ON domain_event (resource_type, resource_id, version, seq)",
]

# Patients and consents became feed resources with this migration: their existing rows get the
# event they would have had, so an EHR syncing from the start receives them too.
_BACKFILL = [
    "INSERT INTO domain_event (type, resource_type, resource_id, patient_id, operation, version, occurred_at, payload) "
    "SELECT 'Patient.created', 'Patient', id, id, 'CREATED', 1, created_at, '{}' FROM patient ORDER BY created_at",
    "INSERT INTO domain_event (type, resource_type, resource_id, patient_id, operation, version, occurred_at, payload) "
    "SELECT 'Consent.granted', 'Consent', id, patient_id, 'CREATED', 1, granted_at, '{}' "
    "FROM data_sharing_consent ORDER BY granted_at",
    "INSERT INTO domain_event (type, resource_type, resource_id, patient_id, operation, version, occurred_at, payload) "
    "SELECT 'Consent.revoked', 'Consent', id, patient_id, 'UPDATED', 2, revoked_at, '{}' "
    "FROM data_sharing_consent WHERE revoked_at IS NOT NULL ORDER BY revoked_at",
]


async def order_by_transaction(apps, schema_editor) -> None:
    statements = _POSTGRES_XID if schema_editor.DIALECT == "postgres" else _SQLITE_INDEXES
    for statement in [*statements, *_BACKFILL]:
        await schema_editor.client.execute_script(statement)


class Migration(migrations.Migration):
    dependencies = [('ketafollow', '0004_opioids')]

    initial = False

    operations = [
        ops.AddField(model_name='DomainEvent', name='xid', field=fields.BigIntField(null=True)),
        ops.RunPython(order_by_transaction),
    ]
