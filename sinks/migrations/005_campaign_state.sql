-- 005_campaign_state.sql — running a campaign (DESIGN.md §4a): a policy's and
-- a sale's state (ACTIVE, PAUSED, CLOSED) and the counts results carry, and
-- who sent each control.
--
-- The counts ride on every result of their entity and are written, like
-- issued and sold, from the highest version (column version). The columns a
-- PATCH may change are written from the highest version of a result that
-- carries the definition (create, control, PATCH): column def_version, so a
-- replayed older definition never overwrites a newer one, whichever batch it
-- comes in. requests.actor is the label of the API key that sent a control
-- ("key-" and 16 hex digits of its SHA-256), for audit:
--   SELECT request_id, command_type, entity_key, actor, status, processed_at
--   FROM requests WHERE actor IS NOT NULL ORDER BY processed_at;
--
-- MySQL 8 has no ADD COLUMN IF NOT EXISTS, and a migration must be safe to
-- run again (DDL commits as it goes), so each table's ALTER is prepared only
-- while its first new column is missing (one ALTER per table is atomic).

SET @promo_005 = IF((SELECT COUNT(*) FROM information_schema.columns
                     WHERE table_schema = DATABASE() AND table_name = 'coupon_policies'
                       AND column_name = 'state') = 0,
                    'ALTER TABLE coupon_policies
                       ADD COLUMN state VARCHAR(8) NOT NULL DEFAULT ''ACTIVE'',
                       ADD COLUMN cancelled_redemptions BIGINT NOT NULL DEFAULT 0,
                       ADD COLUMN discount_total BIGINT NOT NULL DEFAULT 0,
                       ADD COLUMN def_version BIGINT NOT NULL DEFAULT 0',
                    'DO 0');
PREPARE promo_005 FROM @promo_005;
EXECUTE promo_005;
DEALLOCATE PREPARE promo_005;

SET @promo_005 = IF((SELECT COUNT(*) FROM information_schema.columns
                     WHERE table_schema = DATABASE() AND table_name = 'time_sales'
                       AND column_name = 'state') = 0,
                    'ALTER TABLE time_sales
                       ADD COLUMN state VARCHAR(8) NOT NULL DEFAULT ''ACTIVE'',
                       ADD COLUMN orders BIGINT NOT NULL DEFAULT 0,
                       ADD COLUMN cancelled_orders BIGINT NOT NULL DEFAULT 0,
                       ADD COLUMN hold_ms BIGINT NULL,
                       ADD COLUMN def_version BIGINT NOT NULL DEFAULT 0',
                    'DO 0');
PREPARE promo_005 FROM @promo_005;
EXECUTE promo_005;
DEALLOCATE PREPARE promo_005;

SET @promo_005 = IF((SELECT COUNT(*) FROM information_schema.columns
                     WHERE table_schema = DATABASE() AND table_name = 'requests'
                       AND column_name = 'actor') = 0,
                    'ALTER TABLE requests ADD COLUMN actor VARCHAR(64) NULL',
                    'DO 0');
PREPARE promo_005 FROM @promo_005;
EXECUTE promo_005;
DEALLOCATE PREPARE promo_005;
