"""Job parameters in one spelling: the stored params use snake_case, whatever API family made the job."""

import json

RENAMED = {
    "aspectRatio": "aspect_ratio",
    "processMode": "process_mode",
    "imageUrl": "image_url",
    "imageUrls": "image_urls",
}
BATCH = 1000


def _respell(db, renamed):
    """Rename the keys of every job's params that uses an old spelling, a batch at a time."""
    matches = " OR ".join(f"params LIKE {db.param}" for _ in renamed)
    patterns = tuple(f'%"{key}":%' for key in renamed)
    select = f"SELECT id, params FROM job WHERE {matches} LIMIT {BATCH}"
    while True:
        rows = db.execute_sql(select, patterns).fetchall()
        changed = 0
        for job_id, text in rows:
            params = json.loads(text)
            if any(key in renamed for key in params):
                params = {renamed.get(key, key): value for key, value in params.items()}
                update = f"UPDATE job SET params = {db.param} WHERE id = {db.param}"
                db.execute_sql(update, (json.dumps(params), job_id))
                changed += 1
        if changed == 0:
            return


def up(migrator, db):
    _respell(db, RENAMED)


def down(migrator, db):
    _respell(db, {new: old for old, new in RENAMED.items()})
