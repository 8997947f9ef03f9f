-- carbonpipe sql --engine athena: typed carbon_records and carbon_daily
-- over the store s3://acme-carbon/prod
-- carbon_records = compacted Parquet rows + the JSON records no part holds (late
-- records once); emissions_ng and energy_total_nwh are exact integer sums.

CREATE EXTERNAL TABLE IF NOT EXISTS carbon_json_v2 (
  `record_id` string,
  `schema` string,
  `project` string,
  `pipeline` string,
  `run_id` string,
  `step` string,
  `team` string,
  `attempt` bigint,
  `started_at` string,
  `ended_at` string,
  `duration_s` double,
  `status` string,
  `energy_kwh` struct<cpu:double, gpu:double, ram:double, remote:double, total:double>,
  `pue` double,
  `intensity_g_per_kwh` double,
  `emissions_kg_co2e` double,
  `location` struct<provider:string, region:string, country_iso:string>,
  `measurement` struct<method:string>,
  `labels` map<string,string>
)
ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'
WITH SERDEPROPERTIES ('ignore.malformed.json' = 'true')
LOCATION 's3://acme-carbon/prod/records/v2/';

CREATE EXTERNAL TABLE IF NOT EXISTS carbon_json_v1 (
  `record_id` string,
  `schema` string,
  `project` string,
  `pipeline` string,
  `run_id` string,
  `step` string,
  `team` string,
  `attempt` bigint,
  `started_at` string,
  `ended_at` string,
  `duration_s` double,
  `status` string,
  `energy_kwh` struct<cpu:double, gpu:double, ram:double, remote:double, total:double>,
  `pue` double,
  `intensity_g_per_kwh` double,
  `emissions_kg_co2e` double,
  `location` struct<provider:string, region:string, country_iso:string>,
  `measurement` struct<method:string>,
  `labels` map<string,string>
)
ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'
WITH SERDEPROPERTIES ('ignore.malformed.json' = 'true')
LOCATION 's3://acme-carbon/prod/records/v1/';

CREATE OR REPLACE VIEW carbon_json_files AS
SELECT * FROM carbon_json_v2
UNION ALL
SELECT * FROM carbon_json_v1;

CREATE OR REPLACE VIEW carbon_json AS
SELECT record_id, day, project, pipeline, run_id, step, team, attempt, started_at, ended_at, duration_s, status, provider, region, country_iso, method, energy_cpu_kwh, energy_gpu_kwh, energy_ram_kwh, energy_remote_kwh, energy_total_kwh, pue, intensity_g_per_kwh, emissions_kg_co2e, labels, CAST(COALESCE(q_energy_total_nwh + CASE WHEN 2 * r_energy_total_nwh > d_energy_total_nwh OR (2 * r_energy_total_nwh = d_energy_total_nwh AND MOD(q_energy_total_nwh, 2) = 1) THEN 1 ELSE 0 END, 0) AS BIGINT) AS energy_total_nwh, CAST(COALESCE(q_emissions_ng + CASE WHEN 2 * r_emissions_ng > d_emissions_ng OR (2 * r_emissions_ng = d_emissions_ng AND MOD(q_emissions_ng, 2) = 1) THEN 1 ELSE 0 END, 0) AS BIGINT) AS emissions_ng FROM (
  SELECT t3.*, ((n_energy_total_nwh - MOD(n_energy_total_nwh, d_energy_total_nwh)) / d_energy_total_nwh) AS q_energy_total_nwh, MOD(n_energy_total_nwh, d_energy_total_nwh) AS r_energy_total_nwh, ((n_emissions_ng - MOD(n_emissions_ng, d_emissions_ng)) / d_emissions_ng) AS q_emissions_ng, MOD(n_emissions_ng, d_emissions_ng) AS r_emissions_ng FROM (
    SELECT t2.*, CAST(CAST(energy_total_kwh * POWER(2, s_energy_total_nwh) AS BIGINT) AS DECIMAL(38, 0)) * CAST(1000000000000 AS DECIMAL(38, 0)) AS n_energy_total_nwh, (CAST(CAST(POWER(2, LEAST(s_energy_total_nwh, 62)) AS BIGINT) AS DECIMAL(38, 0)) * CAST(CAST(POWER(2, GREATEST(s_energy_total_nwh - 62, 0)) AS BIGINT) AS DECIMAL(38, 0))) AS d_energy_total_nwh, CAST(CAST(emissions_kg_co2e * POWER(2, s_emissions_ng) AS BIGINT) AS DECIMAL(38, 0)) * CAST(1000000000000 AS DECIMAL(38, 0)) AS n_emissions_ng, (CAST(CAST(POWER(2, LEAST(s_emissions_ng, 62)) AS BIGINT) AS DECIMAL(38, 0)) * CAST(CAST(POWER(2, GREATEST(s_emissions_ng - 62, 0)) AS BIGINT) AS DECIMAL(38, 0))) AS d_emissions_ng FROM (
      SELECT t1.*, CASE WHEN energy_total_kwh >= 7.105427357601002e-15 THEN 54 - CAST(FLOOR(LOG2(energy_total_kwh)) AS INT) END AS s_energy_total_nwh, CASE WHEN emissions_kg_co2e >= 7.105427357601002e-15 THEN 54 - CAST(FLOOR(LOG2(emissions_kg_co2e)) AS INT) END AS s_emissions_ng FROM (
        SELECT record_id, CAST(SUBSTR(ended_at, 1, 10) AS DATE) AS day, project, pipeline,
          run_id, step, team, CAST(attempt AS BIGINT) AS attempt,
          CAST(FROM_ISO8601_TIMESTAMP_NANOS(started_at) AT TIME ZONE 'UTC' AS TIMESTAMP(6)) AS started_at, CAST(FROM_ISO8601_TIMESTAMP_NANOS(ended_at) AT TIME ZONE 'UTC' AS TIMESTAMP(6)) AS ended_at,
          duration_s, status, location.provider AS provider, location.region AS region,
          location.country_iso AS country_iso, measurement.method AS method,
          energy_kwh.cpu AS energy_cpu_kwh, energy_kwh.gpu AS energy_gpu_kwh, energy_kwh.ram AS energy_ram_kwh, energy_kwh.remote AS energy_remote_kwh, energy_kwh.total AS energy_total_kwh,
          pue, intensity_g_per_kwh, emissions_kg_co2e, labels
        FROM (
          SELECT f.*, ROW_NUMBER() OVER (PARTITION BY record_id ORDER BY ended_at) AS copy_no
          FROM carbon_json_files f
          WHERE record_id IS NOT NULL AND "schema" IN ('carbonpipe.record/1', 'carbonpipe.record/2')
        ) once WHERE copy_no = 1
      ) t1
    ) t2
  ) t3
) t4;

CREATE EXTERNAL TABLE IF NOT EXISTS carbon_compacted_files (
  `record_id` string,
  `date` string,
  `project` string,
  `pipeline` string,
  `run_id` string,
  `step` string,
  `team` string,
  `status` string,
  `provider` string,
  `region` string,
  `country_iso` string,
  `method` string,
  `started_at` timestamp,
  `ended_at` timestamp,
  `attempt` int,
  `duration_s` double,
  `energy_cpu_kwh` double,
  `energy_gpu_kwh` double,
  `energy_ram_kwh` double,
  `energy_remote_kwh` double,
  `energy_total_kwh` double,
  `pue` double,
  `intensity_g_per_kwh` double,
  `emissions_kg_co2e` double,
  `energy_total_nwh` bigint,
  `emissions_ng` bigint,
  `labels` map<string,string>
)
STORED AS PARQUET
LOCATION 's3://acme-carbon/prod/records/compact/v1/';

CREATE OR REPLACE VIEW carbon_compacted AS
SELECT record_id, CAST("date" AS DATE) AS day, project, pipeline, run_id,
  step, team, CAST(attempt AS BIGINT) AS attempt,
  CAST(started_at AS TIMESTAMP(6)) AS started_at, CAST(ended_at AS TIMESTAMP(6)) AS ended_at,
  duration_s, status, provider, region, country_iso, method,
  energy_cpu_kwh, energy_gpu_kwh, energy_ram_kwh, energy_remote_kwh, energy_total_kwh,
  pue, intensity_g_per_kwh, emissions_kg_co2e, labels,
  energy_total_nwh, emissions_ng, 'parquet' AS source
FROM carbon_compacted_files;

CREATE OR REPLACE VIEW carbon_records AS
SELECT record_id, day, project, pipeline, run_id, step, team, attempt, started_at, ended_at, duration_s, status, provider, region, country_iso, method, energy_cpu_kwh, energy_gpu_kwh, energy_ram_kwh, energy_remote_kwh, energy_total_kwh, pue, intensity_g_per_kwh, emissions_kg_co2e, labels, energy_total_nwh, emissions_ng, source FROM carbon_compacted
UNION ALL
-- JSON records no part holds: the days not compacted yet, and late records.
SELECT record_id, day, project, pipeline, run_id, step, team, attempt, started_at, ended_at, duration_s, status, provider, region, country_iso, method, energy_cpu_kwh, energy_gpu_kwh, energy_ram_kwh, energy_remote_kwh, energy_total_kwh, pue, intensity_g_per_kwh, emissions_kg_co2e, labels, energy_total_nwh, emissions_ng, 'json' AS source FROM carbon_json j
WHERE NOT EXISTS (SELECT 1 FROM carbon_compacted p WHERE p.record_id = j.record_id);

CREATE OR REPLACE VIEW carbon_daily AS
SELECT day, team, pipeline, step, region, COUNT(*) AS records,
  SUM(energy_total_nwh) AS energy_nwh, SUM(emissions_ng) AS emissions_ng,
  SUM(energy_total_nwh) / 1e12 AS energy_kwh, SUM(emissions_ng) / 1e12 AS emissions_kg_co2e
FROM carbon_records
GROUP BY day, team, pipeline, step, region;
