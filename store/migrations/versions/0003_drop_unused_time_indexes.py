"""drop the created_at / updated_at indexes: no query needs them, and every ingested row paid for them

`ix_annotations_updated_at` served no query (pulls keep their watermark from Label Studio's own `updated_at`);
`ix_documents_created_at` served only the nightly's "documents since the last night" (a scan once a night) and the
`oldest` push order, which is by document id now (ids grow in the order documents are stored). Maintaining the two
cost about 3% of a 1M-row ingest.

Revision ID: 0003
Revises: 0002
"""
from __future__ import annotations

from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('annotations', schema=None) as batch_op:
        batch_op.drop_index('ix_annotations_updated_at')
    with op.batch_alter_table('documents', schema=None) as batch_op:
        batch_op.drop_index('ix_documents_created_at')


def downgrade() -> None:
    with op.batch_alter_table('documents', schema=None) as batch_op:
        batch_op.create_index('ix_documents_created_at', ['created_at'], unique=False)
    with op.batch_alter_table('annotations', schema=None) as batch_op:
        batch_op.create_index('ix_annotations_updated_at', ['updated_at'], unique=False)
