"""The Alembic history builds exactly the schema the models describe, and goes back."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from orchestrator.store.engine import alembic_config
from orchestrator.store.models import Base


def test_upgrading_to_head_gives_the_models_schema_and_downgrade_undoes_it(tmp_path):
    database = tmp_path / "schema.db"
    config = alembic_config(f"sqlite+aiosqlite:///{database}")
    command.upgrade(config, "head")
    engine = create_engine(f"sqlite:///{database}")
    try:
        with engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
        command.downgrade(config, "base")
        with engine.connect() as connection:
            tables = (
                connection.exec_driver_sql("select name from sqlite_master where type = 'table'")
                .scalars()
                .all()
            )
        assert set(tables) <= {"alembic_version"}
    finally:
        engine.dispose()
