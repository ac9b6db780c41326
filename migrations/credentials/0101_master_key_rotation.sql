-- Master-key rotation works across tenants: it must find every wrapped key not yet under the
-- target master key, whatever its org, and count wrapped keys per master key for the coverage
-- report. These two functions answer only those questions, with the owner's rights, and
-- return identifiers and counts, never key material. Reading and re-wrapping a key happens in
-- that key's org's own transaction, under row-level security like everything else.

-- Up to `max_rows` credential data keys and up to `max_rows` org keys whose master key is not
-- `target`, oldest first within each kind.
CREATE FUNCTION rotation_pending(target text, max_rows integer)
    RETURNS TABLE (purpose text, org_id uuid, credential_id uuid, version integer)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        (SELECT 'credential_dek', s.org_id, s.credential_id, s.version
           FROM coffer_credentials.credential_secrets s
          WHERE s.kms_key_id <> target
          ORDER BY s.credential_id, s.version
          LIMIT max_rows)
        UNION ALL
        (SELECT 'org_age_key', k.org_id, NULL::uuid, NULL::integer
           FROM coffer_credentials.org_key_secrets k
          WHERE k.kms_key_id <> target
          ORDER BY k.org_id
          LIMIT max_rows)
    $$;
REVOKE ALL ON FUNCTION rotation_pending(text, integer) FROM PUBLIC;
DO $$ BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION rotation_pending(text, integer) TO %I', coffer_role());
END $$;

-- How many wrapped keys of each kind sit under each master key.
CREATE FUNCTION key_coverage()
    RETURNS TABLE (purpose text, kms_key_id text, wrapped_keys bigint)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT 'credential_dek', s.kms_key_id, count(*)
          FROM coffer_credentials.credential_secrets s GROUP BY s.kms_key_id
        UNION ALL
        SELECT 'org_age_key', k.kms_key_id, count(*)
          FROM coffer_credentials.org_key_secrets k GROUP BY k.kms_key_id
        ORDER BY 1, 2
    $$;
REVOKE ALL ON FUNCTION key_coverage() FROM PUBLIC;
DO $$ BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION key_coverage() TO %I', coffer_role());
END $$;
