-- 001_init.sql — the read models the MySQL sink writes and ingest reads.
--
-- Works on MariaDB 10.11 and MySQL 8: plain InnoDB tables, no JSON type (a
-- result is kept as the exact text clients receive), no vendor syntax.
-- Every row carries the version of its entity after the result that wrote it:
-- the sink keeps the highest, so a replayed or older result never overwrites
-- a newer one. Times are milliseconds since the epoch. Text is utf8mb4 with
-- binary collation: ids are case-sensitive ("A" and "a" are two policies, as
-- they are to the processors) and names may hold any Unicode.

CREATE TABLE IF NOT EXISTS requests (
  request_id       VARCHAR(64)  NOT NULL PRIMARY KEY,
  domain           VARCHAR(16)  NOT NULL,
  command_type     VARCHAR(32)  NOT NULL,
  status           VARCHAR(16)  NOT NULL,
  reason           VARCHAR(40)  NULL,
  entity_key       VARCHAR(64)  NOT NULL,
  submitted_at     BIGINT       NOT NULL,
  processed_at     BIGINT       NOT NULL,
  source_partition INT          NOT NULL,
  source_offset    BIGINT       NOT NULL,
  callback_url     VARCHAR(2048) NULL,
  client_id        VARCHAR(64)  NULL,
  result           MEDIUMTEXT   NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS coupon_policies (
  policy_id        VARCHAR(64)  NOT NULL PRIMARY KEY,
  name             VARCHAR(200) NOT NULL,
  discount_type    VARCHAR(8)   NOT NULL,
  discount_value   BIGINT       NOT NULL,
  max_discount     BIGINT       NULL,
  min_order_amount BIGINT       NOT NULL,
  total_quantity   BIGINT       NOT NULL,
  per_user_limit   INT          NOT NULL,
  issue_starts_at  BIGINT       NOT NULL,
  issue_ends_at    BIGINT       NOT NULL,
  valid_until      BIGINT       NULL,
  valid_days       INT          NULL,
  issued           BIGINT       NOT NULL DEFAULT 0,
  redeemed         BIGINT       NOT NULL DEFAULT 0,
  created_at       BIGINT       NOT NULL,
  version          BIGINT       NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS coupons (
  coupon_id        VARCHAR(86)  NOT NULL PRIMARY KEY,
  policy_id        VARCHAR(64)  NOT NULL,
  user_id          VARCHAR(64)  NOT NULL,
  status           VARCHAR(16)  NOT NULL,
  issued_at        BIGINT       NOT NULL,
  expires_at       BIGINT       NULL,
  order_id         VARCHAR(64)  NULL,
  discount         BIGINT       NULL,
  version          BIGINT       NOT NULL,
  KEY coupons_user (user_id, coupon_id),
  KEY coupons_policy (policy_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS point_accounts (
  user_id            VARCHAR(64) NOT NULL PRIMARY KEY,
  balance            BIGINT      NOT NULL,
  next_expiry_at     BIGINT      NULL,
  next_expiry_amount BIGINT      NULL,
  version            BIGINT      NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS point_ledger (
  user_id        VARCHAR(64)  NOT NULL,
  seq            BIGINT       NOT NULL,
  kind           VARCHAR(16)  NOT NULL,
  delta          BIGINT       NOT NULL,
  balance_after  BIGINT       NOT NULL,
  order_id       VARCHAR(64)  NULL,
  reason         VARCHAR(200) NULL,
  expires_at     BIGINT       NULL,
  at             BIGINT       NOT NULL,
  request_id     VARCHAR(64)  NOT NULL,
  PRIMARY KEY (user_id, seq)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS time_sales (
  sale_id        VARCHAR(64)  NOT NULL PRIMARY KEY,
  product_id     VARCHAR(64)  NOT NULL,
  name           VARCHAR(200) NOT NULL,
  original_price BIGINT       NOT NULL,
  sale_price     BIGINT       NOT NULL,
  stock          BIGINT       NOT NULL,
  per_user_limit INT          NOT NULL,
  starts_at      BIGINT       NOT NULL,
  ends_at        BIGINT       NOT NULL,
  sold           BIGINT       NOT NULL DEFAULT 0,
  created_at     BIGINT       NOT NULL,
  version        BIGINT       NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS sale_orders (
  sale_id        VARCHAR(64)  NOT NULL,
  order_id       VARCHAR(64)  NOT NULL,
  user_id        VARCHAR(64)  NOT NULL,
  quantity       INT          NOT NULL,
  status         VARCHAR(16)  NOT NULL,
  placed_at      BIGINT       NOT NULL,
  version        BIGINT       NOT NULL,
  PRIMARY KEY (sale_id, order_id),
  KEY sale_orders_user (user_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
