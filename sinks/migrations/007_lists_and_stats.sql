-- 007_lists_and_stats.sql — operators' lists and stats (DESIGN.md §4a).
--
-- GET /v1/coupon-policies and /v1/time-sales page by id within a state:
-- indexes (state, id). A policy's issued_per_minute counts its coupons by
-- issued_at minute: index coupons (policy_id, issued_at). That index takes
-- the place of coupons_policy_status (policy_id, status) from 003, which
-- served only GET /v1/coupon-policies/{id} counting redeemed coupons: the
-- count is now the redeemed column, which every result of a policy carries
-- since 005 (redeemed, discount_total). So a coupon still costs one
-- secondary index write. The columns of policies last written before 005
-- are counted once from the coupons, while the old index is still there.
--
-- Safe to run again: each step is prepared only while it is still to do.

SET @promo_007 = IF((SELECT COUNT(*) FROM information_schema.statistics
                     WHERE table_schema = DATABASE() AND table_name = 'coupon_policies'
                       AND index_name = 'coupon_policies_state') = 0,
                    'CREATE INDEX coupon_policies_state ON coupon_policies (state, policy_id)', 'DO 0');
PREPARE promo_007 FROM @promo_007;
EXECUTE promo_007;
DEALLOCATE PREPARE promo_007;

SET @promo_007 = IF((SELECT COUNT(*) FROM information_schema.statistics
                     WHERE table_schema = DATABASE() AND table_name = 'time_sales'
                       AND index_name = 'time_sales_state') = 0,
                    'CREATE INDEX time_sales_state ON time_sales (state, sale_id)', 'DO 0');
PREPARE promo_007 FROM @promo_007;
EXECUTE promo_007;
DEALLOCATE PREPARE promo_007;

SET @promo_007 = IF((SELECT COUNT(*) FROM information_schema.statistics
                     WHERE table_schema = DATABASE() AND table_name = 'coupons'
                       AND index_name = 'coupons_policy_issued') = 0,
                    'CREATE INDEX coupons_policy_issued ON coupons (policy_id, issued_at)', 'DO 0');
PREPARE promo_007 FROM @promo_007;
EXECUTE promo_007;
DEALLOCATE PREPARE promo_007;

SET @promo_007 = IF((SELECT COUNT(*) FROM information_schema.statistics
                     WHERE table_schema = DATABASE() AND table_name = 'coupons'
                       AND index_name = 'coupons_policy_status') > 0,
                    'UPDATE coupon_policies p SET
                       redeemed = (SELECT COUNT(*) FROM coupons c
                                   WHERE c.policy_id = p.policy_id AND c.status = ''REDEEMED''),
                       discount_total = (SELECT COALESCE(SUM(c.discount), 0) FROM coupons c
                                         WHERE c.policy_id = p.policy_id AND c.status = ''REDEEMED'')',
                    'DO 0');
PREPARE promo_007 FROM @promo_007;
EXECUTE promo_007;
DEALLOCATE PREPARE promo_007;

SET @promo_007 = IF((SELECT COUNT(*) FROM information_schema.statistics
                     WHERE table_schema = DATABASE() AND table_name = 'coupons'
                       AND index_name = 'coupons_policy_status') > 0,
                    'DROP INDEX coupons_policy_status ON coupons', 'DO 0');
PREPARE promo_007 FROM @promo_007;
EXECUTE promo_007;
DEALLOCATE PREPARE promo_007;
