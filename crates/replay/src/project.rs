//! The projection: SQL over the `events` table, run by DataFusion in one partition so
//! the fold sees events in `seq` order and the result never depends on thread count.

use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::execution::context::SQLOptions;
use datafusion::{
    datasource::MemTable,
    execution::{memory_pool::FairSpillPool, runtime_env::RuntimeEnvBuilder},
    prelude::{SessionConfig, SessionContext},
    sql::sqlparser::ast::Ident,
};
use replayfleet_archive::envelope_schema;
use replayfleet_contracts::Catalog;

use crate::{Error, Result, plan::Column};

/// Rows per DataFusion batch.
const BATCH_SIZE: usize = 8192;

/// The `events` table's schema: the envelope, then the typed payload columns.
///
/// `schema_version` is the version the event was upcast to (the target); `payload` is
/// the upcast payload as JSON text.
pub fn events_schema(catalog: &Catalog) -> SchemaRef {
    // The envelope as the archive reads it; after replay only `occurred_at` and
    // `metadata` can be null (null ids, types, versions and payloads are anomalies).
    let mut fields: Vec<Field> = envelope_schema()
        .fields()
        .iter()
        .map(|f| {
            let nullable = matches!(f.name().as_str(), "occurred_at" | "metadata");
            f.as_ref().clone().with_nullable(nullable)
        })
        .collect();
    fields.extend(
        catalog
            .typed_columns()
            .iter()
            .map(|c| Field::new(&c.name, c.data_type.clone(), true)),
    );
    Arc::new(Schema::new(fields))
}

/// A DataFusion session for one shard (or one finalizer check): one partition, a memory
/// pool of `memory_limit` bytes that spills sorts and aggregations to disk above it, and
/// identifiers kept as written (payload fields are case-sensitive).
pub fn session(memory_limit: u64) -> Result<SessionContext> {
    let config = SessionConfig::new()
        .with_target_partitions(1)
        .with_batch_size(BATCH_SIZE)
        .set_bool("datafusion.sql_parser.enable_ident_normalization", false);
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(memory_limit as usize)))
        .build_arc()
        .map_err(|e| Error::BadProjection(e.to_string()))?;
    Ok(SessionContext::new_with_config_rt(config, runtime))
}

/// Only queries: no DDL, no DML (`COPY`, `INSERT`), no `SET`.
pub fn query_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// The projection query: the user's SQL, sorted by the key.
pub fn keyed_query(sql: &str, key: &[String]) -> String {
    let sql = sql.trim().trim_end_matches(';');
    let order: Vec<String> = key.iter().map(|k| quote(k)).collect();
    format!(
        "SELECT * FROM (\n{sql}\n) AS projection ORDER BY {}",
        order.join(", ")
    )
}

/// A column name quoted for SQL.
pub fn quote(name: &str) -> String {
    Ident::with_quote('"', name).to_string()
}

/// The projection SQL planned over an empty `events` table of the catalog's shape.
async fn plan_over_no_events(
    catalog: &Catalog,
    sql: &str,
) -> Result<(SessionContext, datafusion::dataframe::DataFrame)> {
    let ctx = session(64 * 1024 * 1024)?;
    let table = MemTable::try_new(events_schema(catalog), vec![vec![]])
        .map_err(|e| Error::BadProjection(e.to_string()))?;
    ctx.register_table("events", Arc::new(table))
        .map_err(|e| Error::BadProjection(e.to_string()))?;
    let frame = ctx
        .sql_with_options(sql.trim().trim_end_matches(';'), query_only())
        .await
        .map_err(|e| Error::BadProjection(format!("the SQL does not plan: {e}")))?;
    Ok((ctx, frame))
}

/// Plans the projection over an empty `events` table: the SQL must parse, name only
/// columns that exist, and produce every key column. Returns the output columns.
pub async fn check_projection(catalog: &Catalog, sql: &str, key: &[String]) -> Result<Vec<Column>> {
    let (_, frame) = plan_over_no_events(catalog, sql).await?;
    let output: Schema = frame.schema().as_arrow().clone();
    if key.is_empty() {
        return Err(Error::BadProjection(
            "`projection.key` names no column".into(),
        ));
    }
    for k in key {
        if output.field_with_name(k).is_err() {
            let names: Vec<_> = output.fields().iter().map(|f| f.name().as_str()).collect();
            return Err(Error::BadProjection(format!(
                "key column `{k}` is not an output column of the SQL; its columns are: {}",
                names.join(", ")
            )));
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for f in output.fields() {
        if !seen.insert(f.name()) {
            return Err(Error::BadProjection(format!(
                "the SQL outputs column `{}` twice; give each output column its own name",
                f.name()
            )));
        }
    }
    Ok(columns(&output))
}

/// Plans every invariant over an empty `projection` table shaped like the projection's
/// output, so a bad invariant is an input error before any work.
pub async fn check_invariants(catalog: &Catalog, sql: &str, invariants: &[String]) -> Result<()> {
    let (ctx, frame) = plan_over_no_events(catalog, sql).await?;
    ctx.register_table("projection", frame.into_view())
        .map_err(|e| Error::BadProjection(e.to_string()))?;
    for (i, invariant) in invariants.iter().enumerate() {
        ctx.sql_with_options(invariant, query_only())
            .await
            .map_err(|e| {
                Error::BadProjection(format!(
                    "`checks.invariants[{i}]` (`{invariant}`) does not plan over table `projection`: {e}"
                ))
            })?;
    }
    Ok(())
}

/// The columns of a schema, for plans and commits.
pub fn columns(schema: &Schema) -> Vec<Column> {
    schema
        .fields()
        .iter()
        .map(|f| Column {
            name: f.name().clone(),
            data_type: f.data_type().to_string(),
            nullable: f.is_nullable(),
        })
        .collect()
}
