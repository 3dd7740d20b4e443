-- 008_pending_points.sql — pending points (DESIGN.md §4a).
--
-- point_accounts.pending is a user's points earned with an available_at
-- still to come (not in balance), next_available_at and
-- next_available_amount the first of them; written, like balance, from the
-- newest result of the account. Adjustments are ledger entries of kind
-- ADJUST (point_ledger.kind is text: nothing to change there). Safe to run
-- again, as 005 is.

SET @promo_008 = IF((SELECT COUNT(*) FROM information_schema.columns
                     WHERE table_schema = DATABASE() AND table_name = 'point_accounts'
                       AND column_name = 'pending') = 0,
                    'ALTER TABLE point_accounts
                       ADD COLUMN pending BIGINT NOT NULL DEFAULT 0,
                       ADD COLUMN next_available_at BIGINT NULL,
                       ADD COLUMN next_available_amount BIGINT NULL',
                    'DO 0');
PREPARE promo_008 FROM @promo_008;
EXECUTE promo_008;
DEALLOCATE PREPARE promo_008;
