-- 002_webhooks.sql — the webhook dispatcher's durable state.
--
-- One row in webhook_deliveries per result that asked for a callback, keyed
-- by its Standard Webhooks id "msg_<request_id>": a result read twice is the
-- same delivery. The retry schedule lives in next_attempt_at, so a restarted
-- dispatcher simply picks up the rows that are due. While a dispatcher sends,
-- it holds the row by claim_token and pushes next_attempt_at past the send's
-- timeout (a lease): if it dies, the row falls due again by itself.
-- webhook_attempts keeps every attempt for operators. Times are milliseconds
-- since the epoch; plain InnoDB, works on MariaDB 10.11 and MySQL 8.

CREATE TABLE IF NOT EXISTS webhook_deliveries (
  id               VARCHAR(80)   NOT NULL PRIMARY KEY,
  request_id       VARCHAR(64)   NOT NULL,
  url              VARCHAR(2048) NOT NULL,
  body             MEDIUMTEXT    NOT NULL,
  status           VARCHAR(16)   NOT NULL,
  attempts         INT           NOT NULL DEFAULT 0,
  next_attempt_at  BIGINT        NULL,
  last_status      INT           NULL,
  last_error       VARCHAR(255)  NULL,
  delivered_at     BIGINT        NULL,
  created_at       BIGINT        NOT NULL,
  claim_token      VARCHAR(64)   NULL,
  KEY webhook_deliveries_due (status, next_attempt_at),
  KEY webhook_deliveries_request (request_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS webhook_attempts (
  id           BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
  delivery_id  VARCHAR(80)  NOT NULL,
  attempt      INT          NOT NULL,
  at           BIGINT       NOT NULL,
  http_status  INT          NOT NULL,
  error        VARCHAR(255) NULL,
  duration_ms  INT          NOT NULL,
  KEY webhook_attempts_delivery (delivery_id, attempt)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
