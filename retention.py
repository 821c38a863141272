"""Image retention: deleting the stored images of jobs that ended long ago (APIFRAME_IMAGE_RETENTION_DAYS).

The jobs themselves stay, and their answers keep their image URLs, which then answer 410 IMAGE_EXPIRED. What
goes is everything the storage holds for them: their images and previews, and their inputs (a mask, an
upload). Each worker process prunes about once an hour, on a thread of its own started from the job pool's
upkeep (the storage's calls never hold the dispatcher, which renews leases); ``flask --app app storage
prune`` does it by hand.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from dataclasses import dataclass

from flask import Flask
from peewee import Select

import storage
import uploads
from models import IMAGES_KEPT, Job, db, utcnow

log = logging.getLogger(__name__)

BATCH = 100  # jobs read, deleted from storage and marked at a time
INTERVAL = 3600.0  # seconds between a process's automatic prunes


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
                storage.delete_images(uploads.upload_id(upload))
            # Marked at once, so its URLs answer 410 (not 404) from now, even if a later job's delete fails.
            if Job.update(images_deleted_at=utcnow()).where((Job.id == job.id) & IMAGES_KEPT).execute():
                deleted += 1
                # Again: a preview made from an image read before the delete, and stored after it, goes now,
                # or else (stored after this) by storage.serve_thumbnail, which finds the job marked.
                storage.delete_images(job.id)
        found += len(batch)
        if len(batch) < size:
            break
    return Pruned(found=found, deleted=deleted)


class Schedule:
    """One process's automatic prunes: about once an hour, each on a thread of its own (``run_if_due``)."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.days = int(app.config["IMAGE_RETENTION_DAYS"])
        self.next_run = 0.0  # the first upkeep prunes
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def run_if_due(self) -> None:
        """Start a prune if one is due (never with retention off) and none runs: the storage's calls (S3's may
        take seconds each, or hang up to their timeouts) never hold the caller, the job pool's dispatcher."""
        now = time.monotonic()
        if not self.days or now < self.next_run or (self._thread is not None and self._thread.is_alive()):
            return
        self.next_run = now + INTERVAL
        self._thread = threading.Thread(target=self._prune, name="apiframe-retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Let a prune under way stop after the job it is at (the rest waits for the next one)."""
        self._stopping.set()

    def _prune(self) -> None:
        older_than = datetime.timedelta(days=self.days)
        with self.app.app_context(), db.connection_context():
            try:
                while not self._stopping.is_set():
                    pruned = prune(older_than, limit=BATCH)
                    if pruned.deleted:
                        log.info("deleted the images of %d jobs past %d days", pruned.deleted, self.days)
                    if pruned.found < BATCH:
                        return
            except storage.StorageUnavailable as exc:  # tried again at the next prune, an hour later
                log.warning("old images could not be deleted: %s %s", exc, exc.detail or "")
            except Exception:
                log.exception("deleting old images failed")
