-- Validated rows of each import wait here in a table of their own,
-- import_staging."<job id>", until they are committed (or the import is abandoned).
CREATE SCHEMA IF NOT EXISTS import_staging;
