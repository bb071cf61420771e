"""pgqueue's schema brought to its head revision again: the index of blocked workflow nodes
(the kinds overview counts them), for databases migrated before it existed. Reverting it keeps
the index; reverting ``0001`` drops pgqueue's tables."""

from django.db import migrations

from pgqueue.adapters.django.schema import apply


class Migration(migrations.Migration):  # type: ignore[misc]
    atomic = False
    dependencies = [("pgqueue", "0002_pgqueue_trace_context")]
    operations = [migrations.RunPython(apply, migrations.RunPython.noop, elidable=False)]
