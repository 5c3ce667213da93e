"""Real Redis and PostgreSQL for the shared-profile tests (tests/test_scaleout_*.py).

CI (`.ci/run`) starts them with scripts/services.sh and exports REDIS_URL and TRADECAST_PG_DSN. Locally the
fixture starts them itself when the binaries are installed (and stops what it started); without the binaries
the tests skip with the reason. Each test session gets its own Redis database number (flushed) and its own
PostgreSQL database (dropped at the end), so runs never see each other's state.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ROOT / "scripts" / "services.sh"
TEST_REDIS_DB = 9


@dataclass
class SharedServices:
    redis_url: str  # a database of its own, flushed at start
    pg_dsn: str  # the admin DSN (database `tradecast`)
    mlflow_uri: str  # postgresql+psycopg2://... of a fresh database for this session
    database: str


def binaries_missing() -> str | None:
    """Why the real servers cannot run here, or None."""
    if not shutil.which("redis-server"):
        return "redis-server is not installed (apt-get install redis-server, or run scripts/services.sh start)"
    if not (shutil.which("pg_ctl") or glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")):
        return "PostgreSQL server binaries are not installed (apt-get install postgresql)"
    return None


def _exports(text: str) -> dict[str, str]:
    return dict(re.findall(r"^export (\w+)='([^']*)'$", text, flags=re.M))


def with_db(url: str, db: str | int, scheme: str | None = None) -> str:
    parsed = urlparse(url)
    return urlunparse(parsed._replace(path=f"/{db}", scheme=scheme or parsed.scheme))


def start_services() -> tuple[dict[str, str], bool]:
    """(exported variables, whether this call started them)."""
    env_redis, env_pg = os.environ.get("REDIS_URL"), os.environ.get("TRADECAST_PG_DSN")
    if env_redis and env_pg:
        return {"REDIS_URL": env_redis, "TRADECAST_PG_DSN": env_pg}, False
    reason = binaries_missing()
    if reason:
        pytest.skip(f"shared-profile tests need real servers: {reason}")
    was_up = subprocess.run([str(SERVICES), "status"], capture_output=True, timeout=60).returncode == 0
    out = subprocess.run([str(SERVICES), "start"], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        pytest.fail(f"scripts/services.sh start failed:\n{out.stderr[-3000:]}")
    return _exports(out.stdout), not was_up


@pytest.fixture(scope="session")
def shared_services():
    import psycopg2
    import redis

    exported, started = start_services()
    redis_url = with_db(exported["REDIS_URL"], TEST_REDIS_DB)
    client = redis.Redis.from_url(redis_url, socket_timeout=10)
    client.ping()
    client.flushdb()
    dsn = exported["TRADECAST_PG_DSN"]
    database = f"tradecast_test_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(dsn, connect_timeout=10)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"create database {database}")
    services = SharedServices(redis_url=redis_url, pg_dsn=dsn, database=database,
                              mlflow_uri=with_db(dsn, database, scheme="postgresql+psycopg2"))
    try:
        yield services
    finally:
        client.flushdb()
        with admin.cursor() as cur:
            cur.execute(f"drop database if exists {database} with (force)")
        admin.close()
        if started:
            subprocess.run([str(SERVICES), "stop"], capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def shared_env(shared_services, tmp_path_factory):
    """A fresh $TRADECAST_HOME with the `shared` profile pointed at this session's Redis db and PostgreSQL
    database; the whole environment is restored afterwards (the profile writes os.environ directly)."""
    from tradecast.profiles import apply_profile

    saved = dict(os.environ)
    home = tmp_path_factory.mktemp("shared_home")
    for var in ("TRADECAST_FEATURES__ONLINE_STORE", "MLFLOW_TRACKING_URI", "TRADECAST_MLFLOW_ARTIFACT_ROOT",
                "DASK_SCHEDULER", "TRADECAST_SERVING__WORKERS"):
        os.environ.pop(var, None)
    os.environ["TRADECAST_HOME"] = str(home)
    os.environ["REDIS_URL"] = shared_services.redis_url
    os.environ["MLFLOW_TRACKING_URI"] = shared_services.mlflow_uri
    os.environ["TRADECAST_MLFLOW_ARTIFACT_ROOT"] = str(home / "shared-artifacts")
    applied = apply_profile("shared")
    try:
        yield applied
    finally:
        os.environ.clear()
        os.environ.update(saved)
