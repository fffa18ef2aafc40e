from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from models.identity.accounts import Role
from tortoise.fields.base import OnDelete
from uuid import uuid4
from tortoise import fields

class Migration(migrations.Migration):
    initial = True

    operations = [
        ops.CreateModel(
            name='CareTeam',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('name', fields.CharField(unique=True, max_length=100)),
            ],
            options={'table': 'care_team', 'app': 'ketafollow', 'pk_attr': 'id'},
            bases=['Entity'],
        ),
        ops.CreateModel(
            name='ApiClient',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('client_id', fields.CharField(unique=True, max_length=64)),
                ('name', fields.CharField(max_length=200)),
                ('secret_hash', fields.CharField(max_length=255)),
                ('scopes', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('is_active', fields.BooleanField(default=True)),
                ('care_teams', fields.ManyToManyField('ketafollow.CareTeam', unique=True, db_constraint=True, through='api_client_care_team', forward_key='careteam_id', backward_key='api_client_id', related_name='api_clients', on_delete=OnDelete.CASCADE)),
            ],
            options={'table': 'api_client', 'app': 'ketafollow', 'pk_attr': 'id', 'table_description': 'A third-party EHR integration, authenticating with client credentials.'},
            bases=['Entity'],
        ),
        ops.CreateModel(
            name='User',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('email', fields.CharField(unique=True, max_length=254)),
                ('role', fields.CharEnumField(description='PATIENT: PATIENT\nPROVIDER: PROVIDER\nADMIN: ADMIN', enum_type=Role, max_length=16)),
                ('password_hash', fields.CharField(max_length=255)),
                ('is_active', fields.BooleanField(default=True)),
            ],
            options={'table': 'user_account', 'app': 'ketafollow', 'pk_attr': 'id'},
            bases=['Entity'],
        ),
        ops.CreateModel(
            name='Patient',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('user', fields.OneToOneField('ketafollow.User', source_field='user_id', db_constraint=True, to_field='id', related_name='patient', on_delete=OnDelete.RESTRICT)),
                ('care_team', fields.ForeignKeyField('ketafollow.CareTeam', source_field='care_team_id', db_constraint=True, to_field='id', related_name='patients', on_delete=OnDelete.RESTRICT)),
                ('given_name', fields.CharField(max_length=100)),
                ('family_name', fields.CharField(max_length=100)),
                ('birth_date', fields.DateField()),
                ('time_zone', fields.CharField(max_length=64)),
                ('phone', fields.CharField(null=True, max_length=32)),
            ],
            options={'table': 'patient', 'app': 'ketafollow', 'pk_attr': 'id'},
            bases=['Entity'],
        ),
        ops.CreateModel(
            name='Provider',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('user', fields.OneToOneField('ketafollow.User', source_field='user_id', db_constraint=True, to_field='id', related_name='provider', on_delete=OnDelete.RESTRICT)),
                ('given_name', fields.CharField(max_length=100)),
                ('family_name', fields.CharField(max_length=100)),
                ('credentials', fields.CharField(default='', max_length=50)),
                ('npi', fields.CharField(null=True, unique=True, max_length=10)),
                ('time_zone', fields.CharField(max_length=64)),
                ('care_teams', fields.ManyToManyField('ketafollow.CareTeam', unique=True, db_constraint=True, through='provider_care_team', forward_key='careteam_id', backward_key='provider_id', related_name='providers', on_delete=OnDelete.CASCADE)),
            ],
            options={'table': 'provider', 'app': 'ketafollow', 'pk_attr': 'id'},
            bases=['Entity'],
        ),
    ]
