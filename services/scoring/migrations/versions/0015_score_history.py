"""scoring: every published score version kept, by month, for as long as the retention says

`score_history` is partitioned by the month of `computed_at`; `scoring.keep_score_history(n)`
creates this month's and next month's partitions and drops those older than `n` months (run
at start and every hour). Rows of a month with no partition yet land in the default one.

Revision ID: 0015
"""

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE scoring.score_history (
            subject_type varchar(16) COLLATE "C" NOT NULL,
            subject_id varchar(64) COLLATE "C" NOT NULL,
            period varchar(80) COLLATE "C" NOT NULL,
            criteria_set varchar(80) COLLATE "C" NOT NULL,
            version integer NOT NULL,
            score double precision NOT NULL,
            max_score double precision NOT NULL,
            rank integer,
            rank_of integer,
            components json NOT NULL,
            indicators json NOT NULL,
            as_of_event_time timestamptz,
            computed_at timestamptz NOT NULL
        ) PARTITION BY RANGE (computed_at)
        """
    )
    op.execute(
        "CREATE INDEX ix_score_history_key ON scoring.score_history "
        "(subject_type, subject_id, period, criteria_set, version)"
    )
    op.execute(
        "CREATE TABLE scoring.score_history_default PARTITION OF scoring.score_history DEFAULT"
    )
    op.execute(
        """
        CREATE FUNCTION scoring.keep_score_history(keep_months integer) RETURNS void
        LANGUAGE plpgsql AS $$
        DECLARE
          month date;
          part record;
          oldest date := date_trunc('month', now() AT TIME ZONE 'Asia/Ho_Chi_Minh')::date
                         - make_interval(months => keep_months);
        BEGIN
          FOR offset_months IN 0..1 LOOP
            month := (date_trunc('month', now() AT TIME ZONE 'Asia/Ho_Chi_Minh')
                      + make_interval(months => offset_months))::date;
            EXECUTE format(
              'CREATE TABLE IF NOT EXISTS scoring.%I PARTITION OF scoring.score_history '
              'FOR VALUES FROM (%L) TO (%L)',
              'score_history_' || to_char(month, 'YYYYMM'),
              (month::timestamp AT TIME ZONE 'Asia/Ho_Chi_Minh'),
              ((month + interval '1 month')::timestamp AT TIME ZONE 'Asia/Ho_Chi_Minh'));
          END LOOP;
          FOR part IN
            SELECT c.relname FROM pg_inherits i
            JOIN pg_class c ON c.oid = i.inhrelid
            JOIN pg_class p ON p.oid = i.inhparent
            JOIN pg_namespace n ON n.oid = p.relnamespace
            WHERE n.nspname = 'scoring' AND p.relname = 'score_history'
              AND c.relname ~ '^score_history_[0-9]{6}$'
              AND to_date(right(c.relname, 6), 'YYYYMM') < oldest
          LOOP
            EXECUTE format('DROP TABLE scoring.%I', part.relname);
          END LOOP;
        END $$
        """
    )
    op.execute("SELECT scoring.keep_score_history(24)")


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS scoring.keep_score_history(integer)")
    op.execute("DROP TABLE IF EXISTS scoring.score_history")
