"""Engines and the schema's upgrade, shared by every service and the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    # No pre-ping: it costs a round trip per checkout. After a database restart the first statement on
    # a dead connection fails, SQLAlchemy then discards the whole pool, and the caller's retry (a
    # requeued message, a client's second call) gets a fresh connection.
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800)


def ensure_database(url: str) -> None:
    """Create the database named in `url` if the server does not have it yet."""
    target = make_url(url)
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": target.database})
            if not exists:
                conn.execute(text(f'CREATE DATABASE "{target.database}"'))
    finally:
        admin.dispose()


def alembic_config(url: str) -> Config:
    # Imported here: alembic is 9 MB of every service's memory, and only a migration needs it.
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "heads") -> None:
    """Every branch to its head: features add migrations on branches of their own off a common base."""
    from alembic import command

    ensure_database(url)
    command.upgrade(alembic_config(url), revision)
