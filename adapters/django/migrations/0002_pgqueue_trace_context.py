"""pgqueue's schema brought to its head revision again: the tasks' ``trace_context`` column
(OpenTelemetry), for databases migrated before it existed. Reverting it keeps the column;
reverting ``0001`` drops pgqueue's tables."""

from django.db import migrations

from pgqueue.adapters.django.schema import apply


class Migration(migrations.Migration):  # type: ignore[misc]
    atomic = False
    dependencies = [("pgqueue", "0001_pgqueue_schema")]
    operations = [migrations.RunPython(apply, migrations.RunPython.noop, elidable=False)]
