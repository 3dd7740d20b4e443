-- 004_drop_coupons_policy_index.sql — coupons_policy (policy_id) is a prefix
-- of coupons_policy_status (policy_id, status) from 003: every lookup by
-- policy can use the longer one, so the shorter one only costs a secondary
-- index write per issued coupon, which the sink pays on every batch.
--
-- MySQL 8 has no DROP INDEX IF EXISTS, and a migration must be safe to run
-- again (DDL commits as it goes), so the DROP is prepared only while the
-- index exists; this works on MariaDB 10.11 and MySQL 8 alike.
SET @promo_004 = IF((SELECT COUNT(*) FROM information_schema.statistics
                     WHERE table_schema = DATABASE() AND table_name = 'coupons'
                       AND index_name = 'coupons_policy') > 0,
                    'DROP INDEX coupons_policy ON coupons', 'DO 0');
PREPARE promo_004 FROM @promo_004;
EXECUTE promo_004;
DEALLOCATE PREPARE promo_004;
