# Offline replay (issue #11): the phone's time beside the server's receipt time. Old rows keep NULL:
# their device time was never sent, and their receipt time is already in reported_at /
# submitted_at / started_at.
from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('ketafollow', '0006_push_devices')]

    initial = False

    operations = [
        ops.AddField(
            model_name='DosingSession',
            name='completion_received_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='DosingSession',
            name='start_received_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='SideEffectReport',
            name='recorded_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='SurveyResponse',
            name='recorded_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
    ]
