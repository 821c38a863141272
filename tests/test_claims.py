"""Claims stay exactly-once on PostgreSQL: dispatchers in several processes and threads race for jobs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import psycopg2

from app import create_app
from conftest import stop_background
from servers import ROOT


def test_racing_dispatchers_claim_every_job_exactly_once(settings, postgres_url, tmp_path):
    import accounts
    import jobs

    application = create_app({**settings, "DATABASE_URL": postgres_url, "START_WORKERS": False})
    with application.app_context():
        account, _ = accounts.create("race@example.com", plan="scale")
        accepted = [jobs.submit(account, "describe", 4, params={"image_url": "x"}) for _ in range(300)]
        submitted = {str(job.id) for job in accepted}
    stop_background(application)

    go = tmp_path / "go"  # every process and thread starts claiming once it exists
    racers = [
        subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "tests" / "claim_race.py"),
                postgres_url,
                str(tmp_path / f"d{n}"),
                str(go),
                "4",
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(3)
    ]
    for racer in racers:  # each has its app built and its connections open, however slowly it started
        assert racer.stdout.readline().strip() == "ready", racer.stderr.read()
    go.touch()
    results = []
    for racer in racers:
        out, err = racer.communicate(timeout=60)
        assert racer.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1])["claimed"])

    claims = Counter(job for claimed in results for job in claimed)
    assert set(claims) == submitted
    assert max(claims.values()) == 1, [job for job, count in claims.items() if count > 1]
    assert sum(1 for claimed in results if claimed) >= 2, "the processes did not race"
    connection = psycopg2.connect(postgres_url)
    with connection, connection.cursor() as cursor:
        cursor.execute("SELECT status, count(*), count(DISTINCT lease_token) FROM job GROUP BY status")
        assert cursor.fetchall() == [("queued", 300, 300)]
    connection.close()
