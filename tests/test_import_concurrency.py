"""Imports that overlap (two cron jobs, two people) neither fail nor duplicate anyone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, func, select

from mailer.store.models import Subscriber


def test_two_overlapping_imports_at_once(database_url: str, tmp_path: Path) -> None:
    shared = [f"shared{i}@exemple.fr" for i in range(3000)]
    files = []
    for name in ("a", "b"):
        own = [f"{name}{i}@exemple.fr" for i in range(1000)]
        path = tmp_path / f"{name}.csv"
        path.write_text("email\n" + "\n".join(shared + own) + "\n", encoding="utf-8")
        files.append(path)
    env = {**os.environ, "MAILER_DATABASE_URL": database_url}
    # Create the schema first: the race under test is the import, not the first migration.
    # (`status` only reads and creates no database: an import of a header alone does.)
    (tmp_path / "none.csv").write_text("email\n", encoding="utf-8")
    subprocess.run(
        [sys.executable, "-m", "mailer", "import", str(tmp_path / "none.csv")],
        env=env,
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "mailer", "import", str(path), "--json"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for path in files
    ]
    reports = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
        reports.append(json.loads(stdout))
    assert all(report["rejected"] == [] for report in reports)
    engine = create_engine(database_url)
    with engine.connect() as connection:
        total = connection.scalar(select(func.count()).select_from(Subscriber))
        distinct = connection.scalar(select(func.count(func.distinct(Subscriber.email_key))))
    engine.dispose()
    assert total == distinct == 5000


def test_first_use_by_two_processes_at_once_creates_the_schema_once(
    database_url: str, tmp_path: Path
) -> None:
    env = {**os.environ, "MAILER_DATABASE_URL": database_url}
    # An import (of a header alone) creates the database; `status` only reads and would not.
    (tmp_path / "none.csv").write_text("email\n", encoding="utf-8")
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "mailer", "import", str(tmp_path / "none.csv"), "--json"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for process in processes:
        stdout, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
        assert json.loads(stdout)["imported"] == 0
