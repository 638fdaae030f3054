"""The SQL schema (SQLAlchemy Core). Alembic migrations in `migrations/versions` create it."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from bot.store.sqlite_plain import pack_payload, unpack_payload

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class Payload(sa.TypeDecorator[str]):
    """A job's payload: text, which SQLite keeps LZ4-compressed once it is long (`pack_payload`;
    intake's plain-sqlite3 path packs it the same way). Other databases store the text as it is
    (PostgreSQL compresses it itself, with LZ4 where it can: migration 0005)."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: sa.Dialect) -> Any:
        if value is None or dialect.name != "sqlite":
            return value
        return pack_payload(value)

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> str | None:
        if value is None or dialect.name != "sqlite":
            return value  # type: ignore[no-any-return]
        return unpack_payload(value)


deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("platform", sa.String(16), primary_key=True),
    sa.Column("delivery_id", sa.String(255), primary_key=True),
    sa.Column("event", sa.String(100), nullable=False),
    sa.Column("received_at", sa.Float, nullable=False),
    sa.Index(None, "received_at"),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("key", sa.String(255), nullable=True),
    sa.Column("payload", Payload, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    sa.Column("run_at", sa.Float, nullable=False),
    sa.Column("lease_until", sa.Float, nullable=True),
    sa.Column("worker_id", sa.String(128), nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("progress", sa.Text, nullable=True),
    sa.Column("delivery_id", sa.String(255), nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float, nullable=True),
    sa.Column("finished_at", sa.Float, nullable=True),
    sa.Index(None, "state", "run_at"),
    sa.Index(None, "key", "state"),
)

installations = sa.Table(
    "installations",
    metadata,
    sa.Column("platform", sa.String(16), primary_key=True),
    sa.Column("installation_id", sa.BigInteger, primary_key=True),
    sa.Column("account", sa.String(255), nullable=False),
    sa.Column("account_type", sa.String(32), nullable=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("repository_selection", sa.String(16), nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

installation_repositories = sa.Table(
    "installation_repositories",
    metadata,
    sa.Column("platform", sa.String(16), primary_key=True),
    sa.Column("installation_id", sa.BigInteger, primary_key=True),
    sa.Column("repo", sa.String(255), primary_key=True),
    sa.Column("added_at", sa.Float, nullable=False),
)

llm_cache = sa.Table(
    "llm_cache",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Index(None, "expires_at"),
)

reviews = sa.Table(
    "reviews",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("platform", sa.String(16), nullable=False),
    sa.Column("repo", sa.String(255), nullable=False),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("job_id", sa.BigInteger, nullable=True),
    sa.Column("delivery_id", sa.String(255), nullable=True),
    sa.Column("head_sha", sa.String(64), nullable=False),
    sa.Column("base_sha", sa.String(64), nullable=True),
    sa.Column("mode", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("model", sa.String(128), nullable=True),
    sa.Column("calls", sa.Integer, nullable=False, default=0),
    sa.Column("cached_calls", sa.Integer, nullable=False, default=0),
    sa.Column("input_tokens", sa.Integer, nullable=False, default=0),
    sa.Column("output_tokens", sa.Integer, nullable=False, default=0),
    sa.Column("cost_usd", sa.Float, nullable=False, default=0.0),
    sa.Column("findings", sa.Integer, nullable=False, default=0),
    sa.Column("severity_counts", sa.Text, nullable=True),
    sa.Column("not_reviewed", sa.Text, nullable=True),
    sa.Column("dropped", sa.Integer, nullable=False, default=0),
    sa.Column("posted_review_id", sa.String(64), nullable=True),
    sa.Column("url", sa.Text, nullable=True),
    sa.Column("duration_seconds", sa.Float, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float, nullable=True),
    sa.Index(None, "platform", "repo", "number"),
    sa.Index(None, "created_at"),
    sa.Index(None, "job_id"),
    sa.Index(None, "model", "id"),  # a model's recent reviews (`output_per_call`)
)

findings = sa.Table(
    "findings",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("review_id", sa.BigInteger, nullable=False),
    sa.Column("platform", sa.String(16), nullable=False),
    sa.Column("repo", sa.String(255), nullable=False),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("line", sa.Integer, nullable=False),
    sa.Column("start_line", sa.Integer, nullable=True),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("category", sa.String(32), nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("posted", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.UniqueConstraint("platform", "repo", "number", "fingerprint"),
    sa.Index(None, "review_id"),
)

pr_states = sa.Table(
    "pr_states",
    metadata,
    sa.Column("platform", sa.String(16), primary_key=True),
    sa.Column("repo", sa.String(255), primary_key=True),
    sa.Column("number", sa.Integer, primary_key=True),
    sa.Column("last_reviewed_head", sa.String(64), nullable=True),
    sa.Column("paused", sa.Boolean, nullable=False, default=False),
    sa.Column("full_requested", sa.Boolean, nullable=False, default=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

usage = sa.Table(
    "usage",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("platform", sa.String(16), nullable=True),
    sa.Column("repo", sa.String(255), nullable=True),
    sa.Column("number", sa.Integer, nullable=True),
    sa.Column("model", sa.String(128), nullable=True),
    sa.Column("input_tokens", sa.Integer, nullable=False),
    sa.Column("output_tokens", sa.Integer, nullable=False),
    sa.Column("cost_usd", sa.Float, nullable=False),
    sa.Column("review_id", sa.BigInteger, nullable=True),
    sa.Index(None, "at"),
)

# What people asked Arbiter on pull requests (questions and commands) and what came of it.
exchanges = sa.Table(
    "exchanges",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("platform", sa.String(16), nullable=False),
    sa.Column("delivery_id", sa.String(255), nullable=False),
    sa.Column("repo", sa.String(255), nullable=False),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("comment_id", sa.String(64), nullable=False),
    sa.Column("thread", sa.String(255), nullable=True),
    sa.Column("path", sa.Text, nullable=True),
    sa.Column("line", sa.Integer, nullable=True),
    sa.Column("author", sa.String(255), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("command", sa.String(32), nullable=True),
    sa.Column("question", sa.Text, nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("answer", sa.Text, nullable=True),
    sa.Column("confidence", sa.Float, nullable=True),
    sa.Column("reply_id", sa.String(64), nullable=True),
    sa.Column("model", sa.String(128), nullable=True),
    sa.Column("input_tokens", sa.Integer, nullable=False, default=0),
    sa.Column("output_tokens", sa.Integer, nullable=False, default=0),
    sa.Column("cost_usd", sa.Float, nullable=False, default=0.0),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float, nullable=True),
    sa.UniqueConstraint("platform", "delivery_id"),
    sa.Index(None, "platform", "repo", "number", "author", "created_at"),
    sa.Index(None, "created_at"),
)

# --- Recovery (bot/recovery/): background passes, watermarks, redeliveries, repositories seen ----

# One row per background pass: its lease (one process runs it at a time) and its last run.
recovery_passes = sa.Table(
    "recovery_passes",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(128), nullable=True),
    sa.Column("lease_until", sa.Float, nullable=True),
    sa.Column("started_at", sa.Float, nullable=True),
    sa.Column("finished_at", sa.Float, nullable=True),
    sa.Column("summary", sa.Text, nullable=True),
    sa.Column("total", sa.BigInteger, nullable=False, default=0),
)

# Where each pass left off, per source (a webhook, a repository).
watermarks = sa.Table(
    "watermarks",
    metadata,
    sa.Column("name", sa.String(512), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

# Deliveries Arbiter asked a platform to send again: never twice for one failed attempt.
redeliveries = sa.Table(
    "redeliveries",
    metadata,
    sa.Column("platform", sa.String(16), primary_key=True),
    sa.Column("guid", sa.String(255), primary_key=True),
    sa.Column("source", sa.String(512), nullable=False),
    sa.Column("attempt_id", sa.BigInteger, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("requested_at", sa.Float, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Index(None, "created_at"),
)

# Repositories (GitLab: projects) Arbiter has seen events or an installation for.
known_repositories = sa.Table(
    "known_repositories",
    metadata,
    sa.Column("platform", sa.String(16), primary_key=True),
    sa.Column("repo", sa.String(255), primary_key=True),
    sa.Column("installation_id", sa.BigInteger, nullable=True),
    sa.Column("first_seen_at", sa.Float, nullable=False),
    sa.Column("last_seen_at", sa.Float, nullable=False),
)
