from tortoise import migrations
from tortoise.migrations import operations as ops
from models.outcomes.opioids import StrengthUnit
from tortoise.fields.base import OnDelete
from uuid import uuid4
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('ketafollow', '0003_clinical_surveys_messaging')]

    initial = False

    operations = [
        ops.CreateModel(
            name='OpioidDose',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('patient', fields.ForeignKeyField('ketafollow.Patient', source_field='patient_id', db_constraint=True, to_field='id', related_name='opioid_doses', on_delete=OnDelete.RESTRICT)),
                ('drug', fields.CharField(max_length=40)),
                ('strength', fields.DecimalField(max_digits=8, decimal_places=2)),
                ('strength_unit', fields.CharEnumField(description='MG: mg\nMCG: mcg\nMCG_PER_HOUR: mcg/hr', enum_type=StrengthUnit, max_length=8)),
                ('quantity', fields.DecimalField(max_digits=6, decimal_places=2)),
                ('taken_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('recorded_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'opioid_dose', 'app': 'ketafollow', 'indexes': [Index(fields=['patient_id', 'taken_at'])], 'pk_attr': 'id'},
            bases=['Entity'],
        ),
    ]
