-- Scheduling: a backup's artifact records the bytes its dump program wrote, which its object
-- decompresses to; a restore refuses more. 0 for artifacts recorded before.

ALTER TABLE jobs
    ADD COLUMN artifact_dump_bytes bigint NOT NULL DEFAULT 0;
