from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.fields.base import OnDelete
from uuid import uuid4
from tortoise import fields

# A second factor (issue #19, PRODUCT.md capability 11): TOTP secrets (sealed with a key derived
# from SECRET_KEY), their single-use recovery codes (hashed) and the sign-ins waiting for a code
# (`mfa_token`, hashed). New tables only: no table is rebuilt, so the indexes of 0003/0008 stay.

class Migration(migrations.Migration):
    dependencies = [('ketafollow', '0009_enrolment')]

    initial = False

    operations = [
        ops.CreateModel(
            name='MfaChallenge',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('token_hash', fields.CharField(unique=True, max_length=64)),
                ('user', fields.ForeignKeyField('ketafollow.User', source_field='user_id', db_constraint=True, to_field='id', related_name='mfa_challenges', on_delete=OnDelete.RESTRICT)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('expires_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('attempts', fields.IntField(default=0)),
                ('used_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'mfa_challenge', 'app': 'ketafollow', 'pk_attr': 'id', 'table_description': 'A right password waiting for its second factor (the `mfa_token` of a sign-in).'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='RecoveryCode',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('user', fields.ForeignKeyField('ketafollow.User', source_field='user_id', db_constraint=True, to_field='id', related_name='recovery_codes', on_delete=OnDelete.RESTRICT)),
                ('code_hash', fields.CharField(max_length=64)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('used_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'recovery_code', 'app': 'ketafollow', 'unique_together': (('user', 'code_hash'),), 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='TotpFactor',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('user', fields.OneToOneField('ketafollow.User', source_field='user_id', db_constraint=True, to_field='id', related_name='totp_factor', on_delete=OnDelete.RESTRICT)),
                ('sealed_secret', fields.CharField(max_length=200)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('confirmed_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('last_step', fields.BigIntField(null=True)),
            ],
            options={'table': 'totp_factor', 'app': 'ketafollow', 'pk_attr': 'id', 'table_description': "A user's authenticator secret: pending until confirmed with a code from it."},
            bases=['Model'],
        ),
    ]
