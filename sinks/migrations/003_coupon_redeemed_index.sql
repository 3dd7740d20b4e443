-- 003_coupon_redeemed_index.sql — GET /v1/coupon-policies/{id} counts the
-- policy's redeemed coupons; this index makes that count an index range scan
-- of the redeemed ones only. coupon_policies.redeemed stays unused (results
-- carry no redeemed total).
CREATE INDEX coupons_policy_status ON coupons (policy_id, status);
