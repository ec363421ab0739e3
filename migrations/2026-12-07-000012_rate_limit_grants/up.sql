-- An API process takes a key's allowance a few requests at a time and spends them from memory:
-- the row records how many the last statement granted, so that statement can return it.
ALTER TABLE rate_limits ADD COLUMN granted integer NOT NULL DEFAULT 1;
