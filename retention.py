"""Image retention: deleting the stored images of jobs that ended long ago (APIFRAME_IMAGE_RETENTION_DAYS).

The jobs themselves stay, and their answers keep their image URLs, which then answer 410 IMAGE_EXPIRED. What
goes is everything the storage holds for them: their images and previews, and their inputs (a mask, an
upload). Each worker process prunes from the job pool's upkeep about once an hour (a second at a time while
there is more to delete); ``flask --app app storage prune`` does it by hand.
"""

from __future__ import annotations

import datetime
import logging
import time
import uuid
from dataclasses import dataclass

from flask import Flask
from peewee import Select

import storage
from models import IMAGES_KEPT, Job, utcnow

log = logging.getLogger(__name__)

BATCH = 100  # jobs read, deleted from storage and marked at a time
INTERVAL = 3600.0  # seconds between a process's automatic prunes
ROUND_SECONDS = 1.0  # an automatic prune holds the job pool's dispatcher at most about this long


@dataclass(frozen=True)
class Pruned:
    """What a prune found and did."""

    found: int  # ended jobs older than the cutoff whose images were still kept
    deleted: int  # of them, those this call marked deleted (another process running at once marks the rest)


def _due(cutoff: datetime.datetime) -> Select:
    """The jobs that ended before ``cutoff`` and still have their images, oldest first.

    Only an ended job has a ``completed_at`` (jobs.finish sets it with the terminal status), so the scan
    reads a range of the index of kept images alone; a condition on the status would have the planner
    walk every ended job's row in the (status, created_at) index instead.
    """
    return (
        Job.select(Job.id, Job.params)
        .where(IMAGES_KEPT & (Job.completed_at < cutoff))
        .order_by(Job.completed_at)
    )


def prune(older_than: datetime.timedelta, *, limit: int | None = None, dry_run: bool = False) -> Pruned:
    """Delete the stored images and inputs of up to ``limit`` (default: all) jobs that ended more than
    ``older_than`` ago, in batches, and mark them deleted; with ``dry_run``, only count them.

    Safe to run in several processes at once: a job's files are deleted before it is marked, by whichever
    process gets there, and it is marked once. StorageUnavailable stops it; the jobs not marked yet are
    pruned on the next run.
    """
    due = _due(utcnow() - older_than)
    if dry_run:
        return Pruned(found=(due.limit(limit) if limit is not None else due).count(), deleted=0)
    found = deleted = 0
    while limit is None or found < limit:
        size = BATCH if limit is None else min(BATCH, limit - found)
        batch = list(due.limit(size))
        for job in batch:
            storage.delete_images(job.id)
            upload = (job.params or {}).get("upload")
            if upload:  # an image the client uploaded for it, stored under an id of its own
                storage.delete_images(uuid.UUID(upload.partition("/")[0]))
        if batch:
            ids = [job.id for job in batch]
            marked = Job.update(images_deleted_at=utcnow()).where(Job.id.in_(ids) & IMAGES_KEPT).execute()
            found, deleted = found + len(batch), deleted + marked
        if len(batch) < size:
            break
    return Pruned(found=found, deleted=deleted)


class Schedule:
    """One process's automatic prunes: about once an hour, never long at a time (see ``run_if_due``)."""

    def __init__(self, app: Flask) -> None:
        self.days = int(app.config["IMAGE_RETENTION_DAYS"])
        self.next_run = 0.0  # the first upkeep prunes

    def run_if_due(self) -> None:
        """Prune for at most about ROUND_SECONDS if due (never with retention off); if jobs are left to
        prune, the next call goes on, else the next prune is INTERVAL away. A failure waits for it too."""
        now = time.monotonic()
        if not self.days or now < self.next_run:
            return
        self.next_run = now + INTERVAL
        older_than = datetime.timedelta(days=self.days)
        try:
            while time.monotonic() - now < ROUND_SECONDS:
                pruned = prune(older_than, limit=BATCH)
                if pruned.deleted:
                    log.info("deleted the images of %d jobs older than %d days", pruned.deleted, self.days)
                if pruned.found < BATCH:
                    return
            self.next_run = time.monotonic()  # more to prune: go on at the next upkeep
        except storage.StorageUnavailable as exc:
            log.warning("old images could not be deleted: %s %s", exc, exc.detail or "")
