-- 006_checkout_holds.sql — checkout holds of time sales (DESIGN.md §4a).
--
-- time_sales.held is the units in HELD orders (remaining = stock - sold -
-- held) and expired_orders the holds that lapsed, both counts from the
-- newest result like sold. sale_orders.hold_expires_at is a held order's
-- deadline (kept once the order is PLACED, CANCELLED or EXPIRED; the read
-- endpoint shows it only while the order is HELD). Safe to run again, as
-- 005 is.

SET @promo_006 = IF((SELECT COUNT(*) FROM information_schema.columns
                     WHERE table_schema = DATABASE() AND table_name = 'time_sales'
                       AND column_name = 'held') = 0,
                    'ALTER TABLE time_sales
                       ADD COLUMN held BIGINT NOT NULL DEFAULT 0,
                       ADD COLUMN expired_orders BIGINT NOT NULL DEFAULT 0',
                    'DO 0');
PREPARE promo_006 FROM @promo_006;
EXECUTE promo_006;
DEALLOCATE PREPARE promo_006;

SET @promo_006 = IF((SELECT COUNT(*) FROM information_schema.columns
                     WHERE table_schema = DATABASE() AND table_name = 'sale_orders'
                       AND column_name = 'hold_expires_at') = 0,
                    'ALTER TABLE sale_orders ADD COLUMN hold_expires_at BIGINT NULL',
                    'DO 0');
PREPARE promo_006 FROM @promo_006;
EXECUTE promo_006;
DEALLOCATE PREPARE promo_006;
