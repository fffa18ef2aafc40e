from tortoise import migrations
from tortoise.migrations import operations as ops
from models.notifications.devices import DeactivationReason, Platform
from tortoise.fields.base import OnDelete
from uuid import uuid4
from tortoise import fields
from tortoise.indexes import Index


# A push token belongs to one active registration at a time (the same SQL on SQLite and
# PostgreSQL); a logout finds its session's devices by the second index.
_DEVICE_INDEXES = [
    "CREATE UNIQUE INDEX device_one_active_per_token ON device (push_token) WHERE is_active",
    "CREATE INDEX device_session_family ON device (session_family_id)",
]


async def add_device_indexes(apps, schema_editor) -> None:
    for statement in _DEVICE_INDEXES:
        await schema_editor.client.execute_script(statement)


class Migration(migrations.Migration):
    dependencies = [('ketafollow', '0005_change_feed_order')]

    initial = False

    operations = [
        ops.CreateModel(
            name='Device',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('user', fields.ForeignKeyField('ketafollow.User', source_field='user_id', db_constraint=True, to_field='id', related_name='devices', on_delete=OnDelete.RESTRICT)),
                ('platform', fields.CharEnumField(description='IOS: IOS\nANDROID: ANDROID', enum_type=Platform, max_length=16)),
                ('push_token', fields.CharField(max_length=1024)),
                ('app_version', fields.CharField(max_length=32)),
                ('locale', fields.CharField(max_length=35)),
                ('session_family', fields.ForeignKeyField('ketafollow.SessionFamily', source_field='session_family_id', null=True, db_constraint=True, to_field='id', related_name='devices', on_delete=OnDelete.SET_NULL)),
                ('is_active', fields.BooleanField(default=True)),
                ('last_seen_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('deactivated_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('deactivation_reason', fields.CharEnumField(null=True, description='UNREGISTERED: UNREGISTERED\nSESSION_ENDED: SESSION_ENDED\nTAKEN_BY_ANOTHER_REGISTRATION: TAKEN_BY_ANOTHER_REGISTRATION\nTOKEN_INVALID: TOKEN_INVALID', enum_type=DeactivationReason, max_length=40)),
            ],
            options={'table': 'device', 'app': 'ketafollow', 'indexes': [Index(fields=['user_id', 'is_active'])], 'pk_attr': 'id'},
            bases=['Entity'],
        ),
        ops.CreateModel(
            name='DeviceDelivery',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('notification', fields.ForeignKeyField('ketafollow.Notification', source_field='notification_id', db_constraint=True, to_field='id', related_name='device_deliveries', on_delete=OnDelete.RESTRICT)),
                ('device', fields.ForeignKeyField('ketafollow.Device', source_field='device_id', db_constraint=True, to_field='id', related_name='deliveries', on_delete=OnDelete.RESTRICT)),
                ('delivered_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('provider_message_id', fields.CharField(null=True, max_length=200)),
            ],
            options={'table': 'device_delivery', 'app': 'ketafollow', 'unique_together': (('notification_id', 'device_id'),), 'pk_attr': 'id', 'table_description': 'One notification pushed to one device (recorded once APNs or FCM accepted it).'},
            bases=['Model'],
        ),
        ops.RunPython(add_device_indexes),
    ]
