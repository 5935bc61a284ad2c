"""Open reservations of a key by an index: the concurrency limit counts them on every reservation.

Without it the count read every reservation the key ever made (ix_reservations_key_time)
or every open one of every key (ix_reservations_status_time).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_reservations_key_status", "reservations", ["api_key_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_reservations_key_status", "reservations")
