"""Pricing handles money only: idempotency keys moved to routing's own store, and a credit's
reference is unique per account.

Reservations lose `idempotency_key` and `snapshot` (routing keeps what a retried submit
gets back). Ledger rows were unique by (reference, kind), so a credit to one account with a
reference another account had used was dropped as a duplicate; they are unique by
(account_id, reference, kind) now (a generation id names one account's generation anyway).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("reservations") as batch:
        batch.drop_constraint("uq_reservations_idempotency", type_="unique")
        batch.drop_column("snapshot")
        batch.drop_column("idempotency_key")
    with op.batch_alter_table("ledger_entries") as batch:
        batch.drop_constraint("uq_ledger_reference_kind", type_="unique")
        batch.create_unique_constraint("uq_ledger_account_reference_kind", ["account_id", "reference", "kind"])


def downgrade() -> None:
    with op.batch_alter_table("ledger_entries") as batch:
        batch.drop_constraint("uq_ledger_account_reference_kind", type_="unique")
        batch.create_unique_constraint("uq_ledger_reference_kind", ["reference", "kind"])
    with op.batch_alter_table("reservations") as batch:
        batch.add_column(sa.Column("idempotency_key", sa.String(255), nullable=True))
        batch.add_column(sa.Column("snapshot", sa.LargeBinary, nullable=True))
        batch.create_unique_constraint("uq_reservations_idempotency", ["account_id", "idempotency_key"])
