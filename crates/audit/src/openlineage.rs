//! OpenLineage run events (spec 2-0-2) for a replay run.
//!
//! ```text
//!  run START ─┬─ shard-00000 START ── shard-00000 COMPLETE (or FAIL)
//!             ├─ shard-00001 START ── shard-00001 COMPLETE
//!             └─ ...
//!  run COMPLETE (committed, verified) · FAIL (refused, a shard out of attempts, an error)
//!      · ABORT (halted by a policy or an operator)
//! ```
//!
//! The run is a BATCH job named after `run.name` in the configured namespace; each shard
//! is a child run (job `<run.name>.<shard>`) carrying the ParentRunFacet. Inputs are the
//! archive segments, outputs the projection segments. Every event is written to
//! `runs/<run>/openlineage/<job>-<eventType>.json` and, when `lineage.url` is set, POSTed
//! to its `/api/v1/lineage` (Marquez's API path). Lineage is a record, not a control: a
//! failure to write or post an event is logged and never fails the run. The URL may carry
//! credentials (`http://user:password@host/`): they are used to post, and every message
//! shows the URL through [`redact_url`] (the plan keeps only the redacted URL).
//!
//! Run ids are UUIDs: the run's ULID with the version and variant bits of a UUIDv7 (its
//! first 48 bits are already a millisecond timestamp), and for a shard the same timestamp
//! followed by bits of SHA-256(run id, shard), so every process derives the same ids.

use std::time::Duration;

use chrono::{DateTime, Utc};
use replayfleet_config::redact_url;
use replayfleet_finalizer::{Finalized, Report};
use replayfleet_replay::{Build, Lineage, OutputFile, Plan, Target, to_json_bytes};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The spec version the events follow.
pub const OPENLINEAGE_SCHEMA_URL: &str =
    "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";
/// Where the custom `replayfleet_*` facets are described.
const FACETS_SCHEMA: &str =
    "https://example.invalid/replayfleet/schemas/openlineage-facets.schema.json";

/// How a run ended, for its closing event.
#[derive(Debug, Clone, Copy)]
pub enum RunEnd<'a> {
    /// The finalizer ran to the end: committed, verified (a window run), already
    /// committed (COMPLETE) or refused (FAIL).
    Finalized(&'a Finalized),
    /// Halted by a `halt` policy or an operator (ABORT).
    Halted(&'a str),
    /// A shard ran out of attempts, or the run failed otherwise (FAIL).
    Failed(&'a str),
}

/// Emits one run's OpenLineage events.
#[derive(Debug, Clone)]
pub struct Emitter {
    plan: std::sync::Arc<Plan>,
    target: Target,
    namespace: String,
    /// The client, the endpoint to post to (credentials included) and the same endpoint
    /// to show.
    client: Option<(reqwest::Client, String, String)>,
}

impl Emitter {
    /// An emitter for `plan`'s run, writing into `target`, its jobs in `namespace`, and
    /// posting to `url` (`lineage.url` as configured, credentials included) when given.
    pub fn new(
        plan: std::sync::Arc<Plan>,
        target: Target,
        namespace: &str,
        url: Option<&str>,
    ) -> Self {
        let client = url.and_then(|url| {
            let endpoint = endpoint(url);
            let shown = redact_url(&endpoint);
            match reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
            {
                Ok(client) => Some((client, endpoint, shown)),
                Err(e) => {
                    tracing::warn!(url = %shown, error = %e.without_url(), "no OpenLineage client; events are only written to the run folder");
                    None
                }
            }
        });
        Emitter {
            plan,
            target,
            namespace: namespace.to_owned(),
            client,
        }
    }

    /// The run's START (once: a resumed run does not start again).
    pub async fn run_started(&self) {
        let name = "run-START.json";
        if matches!(self.target.exists(&self.path(name)).await, Ok(true)) {
            return;
        }
        let inputs: Vec<Value> = self
            .plan
            .segments
            .iter()
            .map(|s| {
                let seq = (s.seq_min, s.seq_max, s.rows);
                self.input_dataset(&s.path, seq, None, s.etag.as_deref())
            })
            .collect();
        let event = self.event(
            "START",
            self.plan.created_at,
            self.run(self.run_id(), json!({"replayfleet_run": self.run_facet()})),
            self.job(&self.plan.name, "JOB", true),
            inputs,
            Vec::new(),
        );
        self.emit(name, &event).await;
    }

    /// The shards' child runs (from their lineage manifests, and `failed` shards with
    /// their errors), then the run's closing event.
    pub async fn run_ended(&self, end: RunEnd<'_>, failed: &[(String, String)]) {
        let mut outputs = Vec::new();
        for shard in &self.plan.shards {
            let path = Target::lineage_path(&self.plan.run_id, &shard.id);
            match self.target.get_json::<Lineage>(&path).await {
                Ok(Some(lineage)) => {
                    outputs.extend(lineage.outputs.iter().map(|o| self.output_dataset(o)));
                    self.shard_events(&lineage).await;
                }
                Ok(None) => {
                    if let Some((_, error)) = failed.iter().find(|(s, _)| *s == shard.id) {
                        self.shard_failed(&shard.id, error).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(shard = %shard.id, error = %e, "no lineage manifest to report")
                }
            }
        }
        let mut facets = json!({"replayfleet_run": self.run_facet()});
        let event_type = match end {
            RunEnd::Finalized(finalized) => {
                let (kind, report) = match finalized {
                    Finalized::Committed { report, .. } => ("COMPLETE", Some(report)),
                    Finalized::Verified { report } => ("COMPLETE", Some(report)),
                    Finalized::AlreadyCommitted { .. } => ("COMPLETE", None),
                    Finalized::Refused { report } => ("FAIL", Some(report)),
                };
                if let Some(report) = report {
                    facets["replayfleet_discrepancy"] = self.discrepancy(report);
                    if kind == "FAIL" {
                        facets["errorMessage"] = self.error_facet(&format!(
                            "refused: {}",
                            replayfleet_finalizer::summary(report)
                        ));
                    }
                }
                if kind == "FAIL" {
                    outputs.clear();
                }
                if let Finalized::Committed { commit, .. } = finalized {
                    outputs.push(self.table_dataset(commit.version, commit.totals.rows));
                }
                kind
            }
            RunEnd::Halted(reason) => {
                facets["errorMessage"] = self.error_facet(reason);
                outputs.clear();
                "ABORT"
            }
            RunEnd::Failed(reason) => {
                facets["errorMessage"] = self.error_facet(reason);
                outputs.clear();
                "FAIL"
            }
        };
        let event = self.event(
            event_type,
            Utc::now(),
            self.run(self.run_id(), facets),
            self.job(&self.plan.name, "JOB", true),
            Vec::new(),
            outputs,
        );
        self.emit(&format!("run-{event_type}.json"), &event).await;
    }

    async fn shard_events(&self, lineage: &Lineage) {
        let run = || {
            let mut applied = json!({
                "attempt": lineage.attempt,
                "worker": lineage.worker,
                "eventsRead": lineage.applied.events_read,
                "duplicatesDropped": lineage.applied.duplicates_dropped,
                "eventsProjected": lineage.applied.events_projected,
                "anomalies": lineage.applied.anomalies,
                "quarantined": lineage.applied.quarantined,
                "rowsOut": lineage.applied.rows_out,
                "partitions": lineage.partitions,
            });
            if let Some(split) = lineage.split {
                applied["split"] = json!(split);
            }
            self.run(
                self.shard_run_id(&lineage.shard),
                json!({
                    "parent": self.parent_facet(),
                    "replayfleet_upcasters": self.facet("UpcastersRunFacet", json!({
                        "versions": lineage.applied.versions,
                    })),
                    "replayfleet_applied": self.facet("AppliedRunFacet", applied),
                }),
            )
        };
        let job = self.job(&self.shard_job(&lineage.shard), "TASK", false);
        let inputs: Vec<Value> = lineage
            .inputs
            .iter()
            .map(|i| {
                let seq = (i.seq_min, i.seq_max, i.rows);
                let checksum = Some((i.sha256.as_str(), i.bytes));
                self.input_dataset(&i.path, seq, checksum, Some(&i.sha256))
            })
            .collect();
        let start = self.event(
            "START",
            lineage.started_at,
            run(),
            job.clone(),
            inputs.clone(),
            Vec::new(),
        );
        self.emit(&format!("{}-START.json", lineage.shard), &start)
            .await;
        let outputs = lineage
            .outputs
            .iter()
            .map(|o| self.output_dataset(o))
            .collect();
        let complete = self.event("COMPLETE", lineage.finished_at, run(), job, inputs, outputs);
        self.emit(&format!("{}-COMPLETE.json", lineage.shard), &complete)
            .await;
    }

    async fn shard_failed(&self, shard: &str, error: &str) {
        let event = self.event(
            "FAIL",
            Utc::now(),
            self.run(
                self.shard_run_id(shard),
                json!({"parent": self.parent_facet(), "errorMessage": self.error_facet(error)}),
            ),
            self.job(&self.shard_job(shard), "TASK", false),
            Vec::new(),
            Vec::new(),
        );
        self.emit(&format!("{shard}-FAIL.json"), &event).await;
    }

    /// Writes the event under the run folder and posts it; failures are logged.
    async fn emit(&self, name: &str, event: &Value) {
        let bytes = to_json_bytes(event);
        if let Err(e) = self.target.put(&self.path(name), bytes.clone()).await {
            tracing::warn!(event = name, error = %e, "writing an OpenLineage event failed");
        }
        let Some((client, endpoint, shown)) = &self.client else {
            return;
        };
        let posted = client
            .post(endpoint)
            .header("content-type", "application/json")
            .body(bytes)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status);
        if let Err(e) = posted {
            let error = post_error(e, endpoint, shown);
            tracing::warn!(event = name, endpoint = %shown, %error, "posting an OpenLineage event failed");
        }
    }

    fn path(&self, name: &str) -> String {
        format!("{}/openlineage/{name}", Target::run_dir(&self.plan.run_id))
    }

    fn event(
        &self,
        event_type: &str,
        time: DateTime<Utc>,
        run: Value,
        job: Value,
        inputs: Vec<Value>,
        outputs: Vec<Value>,
    ) -> Value {
        json!({
            "eventType": event_type,
            "eventTime": time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "producer": producer(),
            "schemaURL": OPENLINEAGE_SCHEMA_URL,
            "run": run,
            "job": job,
            "inputs": inputs,
            "outputs": outputs,
        })
    }

    fn run(&self, run_id: String, facets: Value) -> Value {
        let mut facets = facets;
        facets["processing_engine"] = self.standard(
            "1-1-1/ProcessingEngineRunFacet.json#/$defs/ProcessingEngineRunFacet",
            json!({"name": "replayfleet", "version": self.plan.build.version}),
        );
        json!({"runId": run_id, "facets": facets})
    }

    fn job(&self, name: &str, job_type: &str, with_sql: bool) -> Value {
        let mut facets = json!({
            "jobType": self.standard(
                "2-0-3/JobTypeJobFacet.json#/$defs/JobTypeJobFacet",
                json!({"processingType": "BATCH", "integration": "REPLAYFLEET", "jobType": job_type}),
            ),
        });
        if with_sql {
            facets["sql"] = self.standard(
                "1-1-0/SQLJobFacet.json#/$defs/SQLJobFacet",
                json!({"query": self.plan.projection.sql}),
            );
        }
        json!({"namespace": self.namespace, "name": name, "facets": facets})
    }

    /// An archive segment: its seq range and rows read, its checksum as read (in a
    /// shard's events), and its version.
    fn input_dataset(
        &self,
        path: &str,
        (seq_min, seq_max, rows): (Option<i64>, Option<i64>, u64),
        checksum: Option<(&str, u64)>,
        version: Option<&str>,
    ) -> Value {
        let (namespace, name) = dataset_name(&self.plan.source.url, path);
        let mut facets = json!({
            "replayfleet_seqRange": self.facet("SeqRangeInputDatasetFacet", json!({
                "seqMin": seq_min, "seqMax": seq_max, "rows": rows,
            })),
        });
        if let Some((sha256, bytes)) = checksum {
            facets["replayfleet_checksum"] = self.checksum(sha256, bytes);
        }
        if let Some(version) = version {
            facets["version"] = self.standard(
                "1-0-1/DatasetVersionDatasetFacet.json#/$defs/DatasetVersionDatasetFacet",
                json!({"datasetVersion": version}),
            );
        }
        json!({"namespace": namespace, "name": name, "facets": facets})
    }

    /// The projection as a whole: the Delta table at the target, at the version the run
    /// committed (`datasetVersion`), after the segments it is made of.
    /// The projection's columns, as a SchemaDatasetFacet.
    fn schema_facet(&self) -> Value {
        let fields: Vec<Value> = self
            .plan
            .output_columns
            .iter()
            .map(|c| json!({"name": c.name, "type": c.data_type}))
            .collect();
        self.standard(
            "1-1-1/SchemaDatasetFacet.json#/$defs/SchemaDatasetFacet",
            json!({"fields": fields}),
        )
    }

    fn table_dataset(&self, version: u64, rows: u64) -> Value {
        let (namespace, name) = dataset_name(&self.plan.target, "");
        json!({
            "namespace": namespace,
            "name": name.trim_end_matches('/'),
            "facets": {
                "schema": self.schema_facet(),
                "storage": self.standard(
                    "1-0-1/StorageDatasetFacet.json#/$defs/StorageDatasetFacet",
                    json!({"storageLayer": "delta", "fileFormat": "parquet"}),
                ),
                "version": self.standard(
                    "1-0-1/DatasetVersionDatasetFacet.json#/$defs/DatasetVersionDatasetFacet",
                    json!({"datasetVersion": version.to_string()}),
                ),
            },
            "outputFacets": {
                "outputStatistics": self.standard(
                    "1-0-2/OutputStatisticsOutputDatasetFacet.json#/$defs/OutputStatisticsOutputDatasetFacet",
                    json!({"rowCount": rows}),
                ),
            },
        })
    }

    fn output_dataset(&self, file: &OutputFile) -> Value {
        let (namespace, name) = dataset_name(&self.plan.target, &file.path);
        json!({
            "namespace": namespace,
            "name": name,
            "facets": {
                "schema": self.schema_facet(),
                "version": self.standard(
                    "1-0-1/DatasetVersionDatasetFacet.json#/$defs/DatasetVersionDatasetFacet",
                    json!({"datasetVersion": file.sha256}),
                ),
                "replayfleet_checksum": self.checksum(&file.sha256, file.bytes),
            },
            "outputFacets": {
                "outputStatistics": self.standard(
                    "1-0-2/OutputStatisticsOutputDatasetFacet.json#/$defs/OutputStatisticsOutputDatasetFacet",
                    json!({"rowCount": file.rows, "size": file.bytes, "fileCount": 1}),
                ),
            },
        })
    }

    fn checksum(&self, sha256: &str, bytes: u64) -> Value {
        self.facet(
            "ChecksumDatasetFacet",
            json!({"sha256": sha256, "bytes": bytes}),
        )
    }

    fn run_facet(&self) -> Value {
        self.facet(
            "RunRunFacet",
            json!({
                "runId": self.plan.run_id,
                "plan": Target::plan_path(&self.plan.run_id),
                "shards": self.plan.shards.len(),
                "windowed": self.plan.window.is_windowed(),
                "catalogSha256": self.plan.contracts.sha256,
                "sqlSha256": self.plan.projection.sql_sha256,
            }),
        )
    }

    fn discrepancy(&self, report: &Report) -> Value {
        let failed: Vec<Value> = report
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| json!({"name": c.name, "class": c.class, "detail": c.detail}))
            .collect();
        self.facet(
            "DiscrepancyRunFacet",
            json!({
                "outcome": report.outcome,
                "version": report.version,
                "baseline": report.baseline,
                "checks": report.checks.len(),
                "failedChecks": failed,
                "diff": report.diff.as_ref().map(|d| json!({
                    "added": d.added, "removed": d.removed, "changed": d.changed,
                    "union": d.union, "changedRatio": d.changed_ratio,
                    "maxChangedRatio": d.max_changed_ratio,
                })),
                "fingerprint": report.fingerprint,
                "report": Target::report_path(&report.run_id),
            }),
        )
    }

    fn parent_facet(&self) -> Value {
        let reference = json!({
            "run": {"runId": self.run_id()},
            "job": {"namespace": self.namespace, "name": self.plan.name},
        });
        let mut facet = self.standard(
            "1-1-0/ParentRunFacet.json#/$defs/ParentRunFacet",
            reference.clone(),
        );
        facet["root"] = reference;
        facet
    }

    fn error_facet(&self, message: &str) -> Value {
        self.standard(
            "1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet",
            json!({"message": message, "programmingLanguage": "rust"}),
        )
    }

    /// A standard facet: `spec` is `<version>/<File>.json#/$defs/<Name>`.
    fn standard(&self, spec: &str, fields: Value) -> Value {
        with_base(
            fields,
            &format!("https://openlineage.io/spec/facets/{spec}"),
        )
    }

    /// A `replayfleet_*` facet, described in docs/schemas/openlineage-facets.schema.json.
    fn facet(&self, name: &str, fields: Value) -> Value {
        with_base(fields, &format!("{FACETS_SCHEMA}#/$defs/{name}"))
    }

    fn shard_job(&self, shard: &str) -> String {
        format!("{}.{shard}", self.plan.name)
    }

    /// The run's UUID.
    pub fn run_id(&self) -> String {
        run_uuid(&self.plan.run_id)
    }

    /// A shard's child-run UUID.
    pub fn shard_run_id(&self, shard: &str) -> String {
        let mut bytes = uuid_bytes(&self.plan.run_id);
        let digest = Sha256::digest(format!("{}/{shard}", self.plan.run_id).as_bytes());
        bytes[6..].copy_from_slice(&digest[..10]);
        format_uuid(bytes)
    }
}

fn with_base(fields: Value, schema_url: &str) -> Value {
    let mut facet = json!({"_producer": producer(), "_schemaURL": schema_url});
    if let (Some(facet), Value::Object(fields)) = (facet.as_object_mut(), fields) {
        facet.extend(fields);
    }
    facet
}

fn producer() -> String {
    format!(
        "https://example.invalid/replayfleet/v{}",
        Build::current().version
    )
}

/// A failed post's message and its causes (`error sending request: client error
/// (Connect): tcp connect error: Connection refused`), never the URL: reqwest's own
/// message embeds it, credentials and all, so it goes (`without_url`), and a cause that
/// quotes it shows it redacted.
fn post_error(e: reqwest::Error, endpoint: &str, shown: &str) -> String {
    let e = e.without_url();
    let mut message = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        message.push_str(": ");
        message.push_str(&c.to_string());
        cause = c.source();
    }
    message.replace(endpoint, shown)
}

/// Marquez's API path under `url`, unless `url` names it already.
fn endpoint(url: &str) -> String {
    let url = url.trim_end_matches('/');
    if url.ends_with("/api/v1/lineage") {
        url.to_owned()
    } else {
        format!("{url}/api/v1/lineage")
    }
}

/// A run id as a UUIDv7: the ULID's 128 bits (48 of them a millisecond timestamp) with
/// the version and variant bits set. Ids that are not `<name>-<ULID>` are hashed.
pub fn run_uuid(run_id: &str) -> String {
    format_uuid(uuid_bytes(run_id))
}

fn uuid_bytes(run_id: &str) -> [u8; 16] {
    let ulid = run_id
        .rsplit('-')
        .next()
        .and_then(|s| ulid::Ulid::from_string(s).ok());
    match ulid {
        Some(ulid) => ulid.0.to_be_bytes(),
        None => {
            let digest = Sha256::digest(run_id.as_bytes());
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(&digest[..16]);
            bytes
        }
    }
}

fn format_uuid(mut bytes: [u8; 16]) -> String {
    bytes[6] = (bytes[6] & 0x0f) | 0x70;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// OpenLineage's dataset naming for a file under a location URL: `file` and the absolute
/// path for local files, `<scheme>://<bucket>` and the key for object stores.
fn dataset_name(location: &str, relative: &str) -> (String, String) {
    match url::Url::parse(location) {
        Ok(url) if url.scheme() == "file" => (
            "file".to_owned(),
            format!("{}/{relative}", url.path().trim_end_matches('/')),
        ),
        Ok(url) => {
            let prefix = url.path().trim_matches('/');
            let name = if prefix.is_empty() {
                relative.to_owned()
            } else {
                format!("{prefix}/{relative}")
            };
            (
                format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default()),
                name,
            )
        }
        Err(_) => ("file".to_owned(), format!("{location}/{relative}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_uuid_v7_and_stable() {
        let id = run_uuid("balances-01J9Z3K4M5N6P7Q8R9S0T1V2W3");
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "7", "{id}");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
        assert_eq!(id, run_uuid("balances-01J9Z3K4M5N6P7Q8R9S0T1V2W3"));
        assert_ne!(id, run_uuid("balances-01J9Z3K4M5N6P7Q8R9S0T1V2W4"));
    }

    #[test]
    fn datasets_follow_openlineage_naming() {
        assert_eq!(
            dataset_name("file:///data/events", "partition=0/a.parquet"),
            ("file".into(), "/data/events/partition=0/a.parquet".into())
        );
        assert_eq!(
            dataset_name("s3://bucket/archive/", "p/a.parquet"),
            ("s3://bucket".into(), "archive/p/a.parquet".into())
        );
        assert_eq!(
            endpoint("http://marquez:5000/"),
            "http://marquez:5000/api/v1/lineage"
        );
        assert_eq!(
            endpoint("http://m/api/v1/lineage"),
            "http://m/api/v1/lineage"
        );
    }
}
