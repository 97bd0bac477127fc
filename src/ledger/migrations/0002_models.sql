-- The models that produced each done item: JSON [{"name", "sha256", "backend"}], NULL when the
-- config has no [[model]]. (The config hash covers them too; this says which ones.)
ALTER TABLE items ADD COLUMN models TEXT;
