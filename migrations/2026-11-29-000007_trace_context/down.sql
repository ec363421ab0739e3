ALTER TABLE webhook_deliveries DROP COLUMN traceparent;
ALTER TABLE zips DROP COLUMN traceparent;
