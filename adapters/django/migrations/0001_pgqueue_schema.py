"""pgqueue's tables, by pgqueue's own migrations (to their head revision at migrate time).

A later pgqueue release that adds a schema revision adds a Django migration here that
upgrades to head again, so ``manage.py migrate`` keeps the schema current.
"""

from django.db import migrations

from pgqueue.adapters.django.schema import apply, revert


class Migration(migrations.Migration):  # type: ignore[misc]
    # Alembic works on its own connection and commits as it goes: nothing to hold open here.
    atomic = False
    initial = True
    dependencies: list[tuple[str, str]] = []
    operations = [migrations.RunPython(apply, revert, elidable=False)]
