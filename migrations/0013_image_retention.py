"""Image retention: when a job's stored images were deleted, and an index of the jobs whose images are kept.

``job.images_deleted_at`` is set once retention.prune has removed a job's images; the partial index on
``completed_at`` holds only the jobs whose images are still stored, so the prune's scan for the oldest
of them reads a range of it, however many jobs the table keeps.
"""

from peewee import DateTimeField, Table

INDEX = "job_completed_at_images_kept"


def up(migrator, db):
    kept = Table("job", ("images_deleted_at",)).images_deleted_at.is_null()
    migrator.migrate(
        migrator.add_column("job", "images_deleted_at", DateTimeField(null=True)),
        migrator.add_index("job", ("completed_at",), False, where=kept, name=INDEX),
    )


def down(migrator, db):
    migrator.migrate(migrator.drop_index("job", INDEX), migrator.drop_column("job", "images_deleted_at"))
