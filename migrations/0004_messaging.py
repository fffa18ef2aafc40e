from tortoise import migrations
from tortoise.migrations import operations as ops
from models.notifications import NotificationStatus
from tortoise.fields.base import OnDelete
from uuid import uuid4
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('ketafollow', '0003_clinical_core_and_surveys')]

    initial = False

    operations = [
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
        ops.AlterField(
            model_name='Notification',
            name='status',
            field=fields.CharEnumField(default=NotificationStatus.PENDING, description='PENDING: PENDING\nSENDING: SENDING\nSENT: SENT\nFAILED: FAILED\nCANCELLED: CANCELLED', enum_type=NotificationStatus, max_length=16),
        ),
        ops.AddField(
            model_name='Notification',
            name='quiet_hours_zone',
            field=fields.CharField(null=True, max_length=64),
        ),
    ]
