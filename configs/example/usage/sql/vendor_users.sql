-- Typed users from the raw rows this run extracted (generic.local_bq_transformer).
-- Identifiers: {project_id}, {org_dataset}. Parameters: @org_slug, @run_id.
SELECT
  org_slug,
  CAST(JSON_VALUE(raw_json, '$.id') AS INT64) AS id,
  JSON_VALUE(raw_json, '$.name') AS name,
  JSON_VALUE(raw_json, '$.email') AS email,
  CAST(JSON_VALUE(raw_json, '$.amount') AS FLOAT64) AS amount,
  CAST(JSON_VALUE(raw_json, '$.active') AS BOOL) AS active,
  JSON_VALUE(raw_json, '$.attributes.tier') AS tier,
  TO_JSON_STRING(JSON_QUERY(raw_json, '$.tags')) AS tags,
  extracted_at AS ingested_at
FROM `{project_id}.{org_dataset}.vendor_users_raw`
WHERE org_slug = @org_slug AND run_id = @run_id
