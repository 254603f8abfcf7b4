"""initial schema

Revision ID: 0001
Revises: 
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('chatgpt_calls',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('image_sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('model', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('outcome', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('prompt_tokens', sa.Integer(), nullable=False),
    sa.Column('completion_tokens', sa.Integer(), nullable=False),
    sa.Column('cost_usd', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('chatgpt_calls', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_chatgpt_calls_created_at'), ['created_at'], unique=False)

    op.create_table('label_cache',
    sa.Column('image_sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('outcome', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('label', sa.JSON(), nullable=False),
    sa.Column('model', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('hits', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('image_sha256')
    )
    op.create_table('model_versions',
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('run_id', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('mar_path', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('checkpoint_path', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('classifier_version', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('served', sa.Boolean(), nullable=False),
    sa.Column('description', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.PrimaryKeyConstraint('version')
    )
    op.create_table('samples',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('image_sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('image_path', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('filename', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('width', sa.Integer(), nullable=False),
    sa.Column('height', sa.Integer(), nullable=False),
    sa.Column('classifier_version', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('dishes', sa.JSON(), nullable=False),
    sa.Column('embedding', sa.LargeBinary(), nullable=True),
    sa.Column('class_probabilities', sa.LargeBinary(), nullable=True),
    sa.Column('pred_calories_kcal', sa.Float(), nullable=True),
    sa.Column('pred_proteins_g', sa.Float(), nullable=True),
    sa.Column('pred_fats_g', sa.Float(), nullable=True),
    sa.Column('pred_carbs_g', sa.Float(), nullable=True),
    sa.Column('pred_model_version', sa.Integer(), nullable=True),
    sa.Column('shown_source', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('label_status', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('label_attempts', sa.Integer(), nullable=False),
    sa.Column('label_next_attempt_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('label_claimed_until', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('label_claimed_by', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('label_error', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('label', sa.JSON(), nullable=True),
    sa.Column('label_calories_kcal', sa.Float(), nullable=True),
    sa.Column('label_proteins_g', sa.Float(), nullable=True),
    sa.Column('label_fats_g', sa.Float(), nullable=True),
    sa.Column('label_carbs_g', sa.Float(), nullable=True),
    sa.Column('label_cached', sa.Boolean(), nullable=False),
    sa.Column('labeled_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('correction_calories_kcal', sa.Float(), nullable=True),
    sa.Column('correction_proteins_g', sa.Float(), nullable=True),
    sa.Column('correction_fats_g', sa.Float(), nullable=True),
    sa.Column('correction_carbs_g', sa.Float(), nullable=True),
    sa.Column('corrected_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('samples', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_samples_classifier_version'), ['classifier_version'], unique=False)
        batch_op.create_index(batch_op.f('ix_samples_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_samples_image_sha256'), ['image_sha256'], unique=False)
        batch_op.create_index(batch_op.f('ix_samples_label_next_attempt_at'), ['label_next_attempt_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_samples_label_status'), ['label_status'], unique=False)

    op.create_table('training_runs',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('finished_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('parameters', sa.JSON(), nullable=False),
    sa.Column('epochs', sa.JSON(), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('served_version_before', sa.Integer(), nullable=True),
    sa.Column('result_version', sa.Integer(), nullable=True),
    sa.Column('train_samples', sa.Integer(), nullable=False),
    sa.Column('val_samples', sa.Integer(), nullable=False),
    sa.Column('message', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('training_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_training_runs_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_training_runs_status'), ['status'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('training_runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_training_runs_status'))
        batch_op.drop_index(batch_op.f('ix_training_runs_created_at'))

    op.drop_table('training_runs')
    with op.batch_alter_table('samples', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_samples_label_status'))
        batch_op.drop_index(batch_op.f('ix_samples_label_next_attempt_at'))
        batch_op.drop_index(batch_op.f('ix_samples_image_sha256'))
        batch_op.drop_index(batch_op.f('ix_samples_created_at'))
        batch_op.drop_index(batch_op.f('ix_samples_classifier_version'))

    op.drop_table('samples')
    op.drop_table('model_versions')
    op.drop_table('label_cache')
    with op.batch_alter_table('chatgpt_calls', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_chatgpt_calls_created_at'))

    op.drop_table('chatgpt_calls')
