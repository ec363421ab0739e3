-- The W3C trace context a job (and a webhook delivery) was created in, so work done later by
-- another process (the sweeper's publish, a webhook delivery) joins the same trace.
ALTER TABLE zips ADD COLUMN traceparent text CHECK (length(traceparent) <= 256);
ALTER TABLE webhook_deliveries ADD COLUMN traceparent text CHECK (length(traceparent) <= 256);
