from tortoise import migrations
from tortoise.migrations import operations as ops
from models.identity.accounts import Role
from models.notifications.notifications import NotificationStatus
from tortoise.fields.base import OnDelete
from uuid import uuid4
from tortoise import fields
from tortoise.indexes import Index

# Enrolment without a shell (issue #19, PRODUCT.md capability 11): invitations with their one-time
# link tokens (stored hashed), password-reset requests and links, the e-mail outbox (new tables),
# and the user agent of each login for `myLogins` (a new nullable column): no table is rebuilt, so
# the invariant indexes of 0003/0008 stay as they are.

class Migration(migrations.Migration):
    dependencies = [('ketafollow', '0008_safety_first')]

    initial = False

    operations = [
        ops.CreateModel(
            name='Invitation',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('email', fields.CharField(db_index=True, max_length=254)),
                ('role', fields.CharEnumField(description='PATIENT: PATIENT\nPROVIDER: PROVIDER\nADMIN: ADMIN', enum_type=Role, max_length=16)),
                ('user', fields.ForeignKeyField('ketafollow.User', source_field='user_id', null=True, db_constraint=True, to_field='id', related_name='invitations', on_delete=OnDelete.RESTRICT)),
                ('care_team_id', fields.UUIDField(null=True)),
                ('invited_by_id', fields.UUIDField()),
                ('token_hash', fields.CharField(unique=True, max_length=64)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('expires_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('accepted_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('revoked_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'invitation', 'app': 'ketafollow', 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='MailMessage',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('recipient', fields.CharField(max_length=254)),
                ('subject', fields.CharField(max_length=200)),
                ('body', fields.TextField(unique=False)),
                ('status', fields.CharEnumField(default=NotificationStatus.PENDING, description='PENDING: PENDING\nSENDING: SENDING\nSENT: SENT\nFAILED: FAILED\nCANCELLED: CANCELLED', enum_type=NotificationStatus, max_length=16)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('not_before', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('attempts', fields.IntField(default=0)),
                ('lease_until', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('sent_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('last_error', fields.CharField(null=True, max_length=300)),
            ],
            options={'table': 'mail_message', 'app': 'ketafollow', 'indexes': [Index(fields=['status', 'not_before'])], 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='PasswordReset',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('email', fields.CharField(max_length=254)),
                ('requested_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('client_address', fields.CharField(null=True, max_length=64)),
                ('processed_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('user', fields.ForeignKeyField('ketafollow.User', source_field='user_id', null=True, db_constraint=True, to_field='id', related_name='password_resets', on_delete=OnDelete.RESTRICT)),
                ('token_hash', fields.CharField(null=True, unique=True, max_length=64)),
                ('expires_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('used_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'password_reset', 'app': 'ketafollow', 'indexes': [Index(fields=['processed_at', 'requested_at'])], 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='SessionFamily',
            name='user_agent',
            field=fields.CharField(null=True, max_length=300),
        ),
    ]
