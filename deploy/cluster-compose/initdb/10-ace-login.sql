-- Written by: python deploy/localauth.py init-script (edits are lost).
-- ACE's login, no superuser (docs/security.md), and the grants it uses.
CREATE ROLE "ace" WITH LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB NOREPLICATION NOBYPASSRLS PASSWORD 'ace_pw';
ALTER DATABASE "acedb" OWNER TO "ace";
DO $$ BEGIN CREATE ROLE "ace_callers" NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN CREATE ROLE "ace_repair" NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN CREATE ROLE "ace_preserve_origin" NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
GRANT SET ON PARAMETER session_replication_role TO ace_repair;
GRANT EXECUTE ON FUNCTION pg_catalog.pg_replication_origin_oid(text), pg_catalog.pg_replication_origin_create(text), pg_catalog.pg_replication_origin_drop(text), pg_catalog.pg_replication_origin_session_setup(text), pg_catalog.pg_replication_origin_session_reset() TO ace_repair;
GRANT EXECUTE ON FUNCTION pg_catalog.pg_replication_origin_xact_setup(pg_catalog.pg_lsn, pg_catalog.timestamptz), pg_catalog.pg_replication_origin_xact_reset() TO ace_preserve_origin;
DO $$ BEGIN
  IF to_regprocedure('spock.repair_mode(boolean)') IS NOT NULL THEN
    GRANT USAGE ON SCHEMA spock TO ace_repair;
    GRANT EXECUTE ON FUNCTION spock.repair_mode(boolean) TO ace_repair;
  END IF;
END $$;
GRANT pg_read_all_data, pg_write_all_data TO "ace";
GRANT "ace_repair" TO "ace";
GRANT "ace_preserve_origin" TO "ace";
GRANT SELECT ON pg_catalog.pg_replication_origin_status TO "ace";
GRANT EXECUTE ON FUNCTION pg_catalog.pg_show_replication_origin_status() TO "ace";
GRANT CONNECT, TEMPORARY, CREATE ON DATABASE "acedb" TO "ace";
GRANT SELECT (subconninfo) ON pg_catalog.pg_subscription TO "ace";
