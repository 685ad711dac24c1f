"""Schedule the periodic index maintenance (lost embeddings, compaction) on django-q2."""

from django.db import migrations

SCHEDULE_NAME = "similarity: maintain index"


def create_schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name=SCHEDULE_NAME,
        defaults={"func": "similarity.tasks.maintain_index", "schedule_type": "I", "minutes": 1, "repeats": -1},
    )


def delete_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=SCHEDULE_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("similarity", "0001_initial"),
        ("django_q", "0015_alter_schedule_schedule_type"),
    ]

    operations = [migrations.RunPython(create_schedule, delete_schedule)]
