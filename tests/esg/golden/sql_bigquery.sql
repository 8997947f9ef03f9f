-- carbonpipe sql --engine bigquery: typed carbon_records and carbon_daily
-- over the store gs://acme-carbon/prod
-- carbon_records = compacted Parquet rows + the JSON records no part holds (late
-- records once); emissions_ng and energy_total_nwh are exact integer sums.

CREATE OR REPLACE EXTERNAL TABLE `carbonpipe.carbon_json_files` (
  `record_id` STRING,
  `schema` STRING,
  `project` STRING,
  `pipeline` STRING,
  `run_id` STRING,
  `step` STRING,
  `team` STRING,
  `attempt` INT64,
  `started_at` STRING,
  `ended_at` STRING,
  `duration_s` FLOAT64,
  `status` STRING,
  `energy_kwh` STRUCT<cpu FLOAT64, gpu FLOAT64, ram FLOAT64, remote FLOAT64, total FLOAT64>,
  `pue` FLOAT64,
  `intensity_g_per_kwh` FLOAT64,
  `emissions_kg_co2e` FLOAT64,
  `location` STRUCT<provider STRING, region STRING, country_iso STRING>,
  `measurement` STRUCT<method STRING>,
  `labels` JSON
)
OPTIONS (format = 'NEWLINE_DELIMITED_JSON', uris = ['gs://acme-carbon/prod/records/v2/*', 'gs://acme-carbon/prod/records/v1/*'],
  ignore_unknown_values = TRUE, max_bad_records = 2147483647);

CREATE OR REPLACE VIEW `carbonpipe.carbon_json` AS
SELECT record_id, day, project, pipeline, run_id, step, team, attempt, started_at, ended_at, duration_s, status, provider, region, country_iso, method, energy_cpu_kwh, energy_gpu_kwh, energy_ram_kwh, energy_remote_kwh, energy_total_kwh, pue, intensity_g_per_kwh, emissions_kg_co2e, labels, CAST(COALESCE(q_energy_total_nwh + CASE WHEN 2 * r_energy_total_nwh > d_energy_total_nwh OR (2 * r_energy_total_nwh = d_energy_total_nwh AND MOD(q_energy_total_nwh, 2) = 1) THEN 1 ELSE 0 END, 0) AS INT64) AS energy_total_nwh, CAST(COALESCE(q_emissions_ng + CASE WHEN 2 * r_emissions_ng > d_emissions_ng OR (2 * r_emissions_ng = d_emissions_ng AND MOD(q_emissions_ng, 2) = 1) THEN 1 ELSE 0 END, 0) AS INT64) AS emissions_ng FROM (
  SELECT t3.*, DIV(n_energy_total_nwh, d_energy_total_nwh) AS q_energy_total_nwh, MOD(n_energy_total_nwh, d_energy_total_nwh) AS r_energy_total_nwh, DIV(n_emissions_ng, d_emissions_ng) AS q_emissions_ng, MOD(n_emissions_ng, d_emissions_ng) AS r_emissions_ng FROM (
    SELECT t2.*, CAST(CAST(energy_total_kwh * POWER(2, s_energy_total_nwh) AS INT64) AS BIGNUMERIC) * CAST(1000000000000 AS BIGNUMERIC) AS n_energy_total_nwh, (CAST(CAST(POWER(2, LEAST(s_energy_total_nwh, 62)) AS INT64) AS BIGNUMERIC) * CAST(CAST(POWER(2, GREATEST(s_energy_total_nwh - 62, 0)) AS INT64) AS BIGNUMERIC)) AS d_energy_total_nwh, CAST(CAST(emissions_kg_co2e * POWER(2, s_emissions_ng) AS INT64) AS BIGNUMERIC) * CAST(1000000000000 AS BIGNUMERIC) AS n_emissions_ng, (CAST(CAST(POWER(2, LEAST(s_emissions_ng, 62)) AS INT64) AS BIGNUMERIC) * CAST(CAST(POWER(2, GREATEST(s_emissions_ng - 62, 0)) AS INT64) AS BIGNUMERIC)) AS d_emissions_ng FROM (
      SELECT t1.*, CASE WHEN energy_total_kwh >= 7.105427357601002e-15 THEN 54 - CAST(FLOOR(LOG(energy_total_kwh, 2)) AS INT64) END AS s_energy_total_nwh, CASE WHEN emissions_kg_co2e >= 7.105427357601002e-15 THEN 54 - CAST(FLOOR(LOG(emissions_kg_co2e, 2)) AS INT64) END AS s_emissions_ng FROM (
        SELECT record_id, CAST(SUBSTR(ended_at, 1, 10) AS DATE) AS day, project, pipeline,
          run_id, step, team, CAST(attempt AS INT64) AS attempt,
          TIMESTAMP(started_at) AS started_at, TIMESTAMP(ended_at) AS ended_at,
          duration_s, status, location.provider AS provider, location.region AS region,
          location.country_iso AS country_iso, measurement.method AS method,
          energy_kwh.cpu AS energy_cpu_kwh, energy_kwh.gpu AS energy_gpu_kwh, energy_kwh.ram AS energy_ram_kwh, energy_kwh.remote AS energy_remote_kwh, energy_kwh.total AS energy_total_kwh,
          pue, intensity_g_per_kwh, emissions_kg_co2e, labels
        FROM (
          SELECT f.*, ROW_NUMBER() OVER (PARTITION BY record_id ORDER BY ended_at) AS copy_no
          FROM `carbonpipe.carbon_json_files` f
          WHERE record_id IS NOT NULL AND `schema` IN ('carbonpipe.record/1', 'carbonpipe.record/2')
        ) once WHERE copy_no = 1
      ) t1
    ) t2
  ) t3
) t4;

CREATE OR REPLACE EXTERNAL TABLE `carbonpipe.carbon_compacted_files`
OPTIONS (format = 'PARQUET', uris = ['gs://acme-carbon/prod/records/compact/v1/*'], enable_list_inference = TRUE);

CREATE OR REPLACE VIEW `carbonpipe.carbon_compacted` AS
SELECT record_id, CAST(`date` AS DATE) AS day, project, pipeline, run_id,
  step, team, CAST(attempt AS INT64) AS attempt,
  started_at AS started_at, ended_at AS ended_at,
  duration_s, status, provider, region, country_iso, method,
  energy_cpu_kwh, energy_gpu_kwh, energy_ram_kwh, energy_remote_kwh, energy_total_kwh,
  pue, intensity_g_per_kwh, emissions_kg_co2e, (SELECT JSON_OBJECT(IFNULL(ARRAY_AGG(kv.key), []), IFNULL(ARRAY_AGG(kv.value), []))
    FROM UNNEST(labels.key_value) AS kv) AS labels,
  energy_total_nwh, emissions_ng, 'parquet' AS source
FROM `carbonpipe.carbon_compacted_files`;

CREATE OR REPLACE VIEW `carbonpipe.carbon_records` AS
SELECT record_id, day, project, pipeline, run_id, step, team, attempt, started_at, ended_at, duration_s, status, provider, region, country_iso, method, energy_cpu_kwh, energy_gpu_kwh, energy_ram_kwh, energy_remote_kwh, energy_total_kwh, pue, intensity_g_per_kwh, emissions_kg_co2e, labels, energy_total_nwh, emissions_ng, source FROM `carbonpipe.carbon_compacted`
UNION ALL
-- JSON records no part holds: the days not compacted yet, and late records.
SELECT record_id, day, project, pipeline, run_id, step, team, attempt, started_at, ended_at, duration_s, status, provider, region, country_iso, method, energy_cpu_kwh, energy_gpu_kwh, energy_ram_kwh, energy_remote_kwh, energy_total_kwh, pue, intensity_g_per_kwh, emissions_kg_co2e, labels, energy_total_nwh, emissions_ng, 'json' AS source FROM `carbonpipe.carbon_json` j
WHERE NOT EXISTS (SELECT 1 FROM `carbonpipe.carbon_compacted` p WHERE p.record_id = j.record_id);

CREATE OR REPLACE VIEW `carbonpipe.carbon_daily` AS
SELECT day, team, pipeline, step, region, COUNT(*) AS records,
  SUM(energy_total_nwh) AS energy_nwh, SUM(emissions_ng) AS emissions_ng,
  SUM(energy_total_nwh) / 1e12 AS energy_kwh, SUM(emissions_ng) / 1e12 AS emissions_kg_co2e
FROM `carbonpipe.carbon_records`
GROUP BY day, team, pipeline, step, region;
