"""The SQL store's tables (SQLAlchemy Core), portable between SQLite and PostgreSQL: JSON is
stored as text, times are unix seconds (``Double``), timestamps of windows ``BigInteger``."""

from __future__ import annotations

import sqlalchemy as sa

KEY = 255  # VARCHAR length for ids: indexable everywhere
API_SOURCE = "api"

metadata = sa.MetaData()

pipelines = sa.Table(
    "pipelines",
    metadata,
    sa.Column("id", sa.String(KEY), primary_key=True),
    sa.Column("spec", sa.Text, nullable=False),  # Pipeline as JSON
    sa.Column("updated_at", sa.Double, nullable=False),
    # Who wrote it: "api" (the API, `pipelines apply`) or the path of the file `run --pipelines`
    # follows; the file's pipelines go when they leave the file, the API's stay.
    sa.Column("source", sa.String(KEY), nullable=False, server_default=API_SOURCE),
)

model_versions = sa.Table(
    "model_versions",
    metadata,
    # Insertion order is "newest first" even when two versions share a created_at.
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("pipeline_id", sa.String(KEY), nullable=False),
    sa.Column("version", sa.String(KEY), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("engine", sa.String(KEY), nullable=False),
    sa.Column("model", sa.String(KEY), nullable=False),
    sa.Column("spec_hash", sa.String(KEY), nullable=False),
    sa.Column("series", sa.BigInteger, nullable=False),
    sa.Column("artifact", sa.Text, nullable=True),
    sa.Column("train_start", sa.BigInteger, nullable=False),
    sa.Column("train_end", sa.BigInteger, nullable=False),
    sa.Column("fit_seconds", sa.Double, nullable=False),
    sa.Column("extra", sa.Text, nullable=False),  # dict[str, str] as JSON
    sa.UniqueConstraint("pipeline_id", "version", name="uq_model_versions_pipeline_version"),
)

active_models = sa.Table(
    "active_models",
    metadata,
    sa.Column("pipeline_id", sa.String(KEY), primary_key=True),
    sa.Column("version", sa.String(KEY), nullable=False),
)

checkpoints = sa.Table(
    "checkpoints",
    metadata,
    sa.Column("pipeline_id", sa.String(KEY), primary_key=True),
    sa.Column("last_end", sa.BigInteger, nullable=False),
)

# One row per pipeline being run: who runs its windows, until when (unix s). Taken and renewed
# by a conditional UPDATE (or INSERT when missing), so two processes cannot both hold it.
leases = sa.Table(
    "leases",
    metadata,
    sa.Column("pipeline_id", sa.String(KEY), primary_key=True),
    sa.Column("owner", sa.String(KEY), nullable=False),
    sa.Column("expires_at", sa.Double, nullable=False),
)

# The window being written, journalled before its first sample is sent and removed when the
# checkpoint moves past it: a row left here is a write that may have been interrupted.
window_journal = sa.Table(
    "window_journal",
    metadata,
    sa.Column("pipeline_id", sa.String(KEY), primary_key=True),
    sa.Column("window_start", sa.BigInteger, nullable=False),
    sa.Column("window_end", sa.BigInteger, nullable=False),
    sa.Column("owner", sa.String(KEY), nullable=False),
    sa.Column("begun_at", sa.Double, nullable=False),
)

job_outcomes = sa.Table(
    "job_outcomes",
    metadata,
    sa.Column("pipeline_id", sa.String(KEY), primary_key=True),
    sa.Column("kind", sa.String(32), primary_key=True),
    sa.Column("at", sa.Double, nullable=False),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("error_at", sa.Double, nullable=True),
)

# The run history. ``listed_at`` is the time runs are listed by (submitted, else started, else
# 0), stored so that "newest first" by pipeline, kind or status reads an index, not a sort.
job_runs = sa.Table(
    "job_runs",
    metadata,
    sa.Column("job_id", sa.String(KEY), primary_key=True),
    sa.Column("pipeline_id", sa.String(KEY), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("start", sa.BigInteger, nullable=True),
    sa.Column("end", sa.BigInteger, nullable=True),
    sa.Column("submitted_at", sa.Double, nullable=True),
    sa.Column("started_at", sa.Double, nullable=True),
    sa.Column("ended_at", sa.Double, nullable=True),
    sa.Column("listed_at", sa.Double, nullable=False),
    sa.Column("series", sa.BigInteger, nullable=False),
    sa.Column("points", sa.BigInteger, nullable=False),
    sa.Column("anomalies", sa.BigInteger, nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("worker", sa.String(KEY), nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Index("ix_job_runs_listed", "listed_at", "job_id"),
    sa.Index("ix_job_runs_pipeline", "pipeline_id", "listed_at", "job_id"),
    sa.Index("ix_job_runs_kind", "kind", "listed_at", "job_id"),
    sa.Index("ix_job_runs_status", "status", "listed_at", "job_id"),
    sa.Index("ix_job_runs_ended", "ended_at"),  # pruning
)


def add_missing_columns(conn: sa.Connection) -> None:
    """Columns added since a table was first created (create_all skips existing tables)."""
    have = {c["name"] for c in sa.inspect(conn).get_columns("pipelines")}
    if "source" not in have:
        # A database from before sources: its pipelines were all written through the API.
        conn.exec_driver_sql(
            f"ALTER TABLE pipelines ADD COLUMN source VARCHAR({KEY}) "
            f"NOT NULL DEFAULT '{API_SOURCE}'"
        )
