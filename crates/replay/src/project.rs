//! The projection: SQL over the `events` table, run by DataFusion in one partition so
//! the fold sees events in `seq` order and the result never depends on thread count.

use std::{path::Path, sync::Arc};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};
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
///
/// Spill files go in `spill_dir` (`limits.spill_dir`), or the OS temp folder, at most
/// `spill_max` bytes of them (`limits.spill_max`).
pub fn session(
    memory_limit: u64,
    spill_dir: Option<&Path>,
    spill_max: u64,
) -> Result<SessionContext> {
    let config = SessionConfig::new()
        .with_target_partitions(1)
        .with_batch_size(BATCH_SIZE)
        .set_bool("datafusion.sql_parser.enable_ident_normalization", false);
    session_of(config, memory_limit, spill_dir, spill_max)
}

/// A session for the finalizer's checks over tables read from Parquet files: as
/// [`session`], on `partitions` partitions (the process's threads), with joins planned as
/// sort-merge joins, which spill (a hash join must hold its build side in memory).
pub fn checks_session(
    memory_limit: u64,
    spill_dir: Option<&Path>,
    spill_max: u64,
    partitions: usize,
) -> Result<SessionContext> {
    let config = SessionConfig::new()
        .with_target_partitions(partitions.max(1))
        .with_batch_size(BATCH_SIZE)
        .set_bool("datafusion.sql_parser.enable_ident_normalization", false)
        .set_bool("datafusion.optimizer.prefer_hash_join", false);
    session_of(config, memory_limit, spill_dir, spill_max)
}

fn session_of(
    config: SessionConfig,
    memory_limit: u64,
    spill_dir: Option<&Path>,
    spill_max: u64,
) -> Result<SessionContext> {
    let mut runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(memory_limit as usize)));
    if let Some(dir) = spill_dir {
        runtime = runtime.with_temp_file_path(dir);
    }
    runtime = runtime.with_max_temp_directory_size(spill_max);
    let runtime = runtime
        .build_arc()
        .map_err(|e| Error::BadProjection(e.to_string()))?;
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    // Functions that multiply their input (`repeat`, `replace`, ...) are bounded per
    // value: their results are not accounted in the memory pool.
    replayfleet_contracts::bound_functions(&ctx);
    Ok(ctx)
}

/// What a DataFusion error says, and which limit to raise when it is one: the memory
/// pool (`limits.memory`) too small for what the SQL must hold, or the spill folder
/// (`limits.spill_dir`) full.
pub fn limit_message(e: &datafusion::error::DataFusionError, spill_dir: Option<&Path>) -> String {
    use datafusion::error::DataFusionError;
    let root = e.find_root();
    let text = root.to_string();
    let folder = || {
        spill_dir.map_or_else(
            || format!("the OS temp folder ({})", std::env::temp_dir().display()),
            |d| format!("`{}`", d.display()),
        )
    };
    let disk_full = matches!(root, DataFusionError::IoError(io) if crate::store::is_disk_full(io))
        || text.contains("No space left on device")
        || text.contains("os error 28");
    if text.contains("exceeded the allowable limit") {
        return format!(
            "the projection spilled more than `limits.spill_max` allows ({text}): raise `limits.spill_max`, or raise `limits.memory` so that less spills"
        );
    }
    if disk_full {
        return format!(
            "the spill folder {} is full: {text}; give `limits.spill_dir` a folder with more room, or raise `limits.memory` so that less spills",
            folder()
        );
    }
    if matches!(root, DataFusionError::ResourcesExhausted(_)) {
        return format!(
            "{text}; the projection needs more memory than `limits.memory` gives it: raise `limits.memory`"
        );
    }
    text
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
    let ctx = session(64 * 1024 * 1024, None, 64 * 1024 * 1024)?;
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

/// The first function of `plan` (its subqueries included) whose result is not a pure
/// function of its arguments — DataFusion's [`Volatility`] `Volatile` (`random()`,
/// `uuid()`) or `Stable` (`now()`, `current_date()`) — as `(name, volatility)`.
///
/// `plan` must be the plan as written, not optimized: the optimizer folds `now()` into
/// a constant of the day it runs.
fn nondeterministic_function(plan: &LogicalPlan) -> Result<Option<(String, Volatility)>> {
    let mut found = None;
    plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if let Expr::ScalarFunction(f) = e {
                    let volatility = f.func.signature().volatility;
                    if volatility != Volatility::Immutable {
                        found = Some((f.func.name().to_owned(), volatility));
                        return Ok(TreeNodeRecursion::Stop);
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    })
    .map_err(|e| Error::BadProjection(e.to_string()))?;
    Ok(found)
}

/// Whether `plan` (its subqueries included) holds a recursive query (`WITH RECURSIVE`).
fn has_recursive_query(plan: &LogicalPlan) -> Result<bool> {
    let mut found = false;
    plan.apply_with_subqueries(|node| {
        if matches!(node, LogicalPlan::RecursiveQuery(_)) {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(|e| Error::BadProjection(e.to_string()))?;
    Ok(found)
}

/// Refuses `plan` when it calls a function that is not deterministic, naming `place`
/// (the config key) and the function, or when it holds a recursive query: DataFusion
/// keeps a recursive query's rows outside the memory pool, with no bound on how many
/// turns it takes (an endless one was seen holding 5.8 GB in 30 s under a 128 MiB pool).
fn refuse_nondeterministic(plan: &LogicalPlan, place: &str, because: &str) -> Result<()> {
    if has_recursive_query(plan)? {
        return Err(Error::BadProjection(format!(
            "{place} uses a recursive query (`WITH RECURSIVE`), which is not allowed: DataFusion holds its rows outside `limits.memory` and nothing bounds how long it runs; express it without recursion"
        )));
    }
    match nondeterministic_function(plan)? {
        None => Ok(()),
        Some((name, volatility)) => {
            let why = match volatility {
                Volatility::Volatile => "volatile: it returns another value on every call",
                _ => {
                    "stable, not immutable: it returns another value on another day or in another session"
                }
            };
            Err(Error::BadProjection(format!(
                "{place} calls `{name}()`, which is {why}; {because}, so only deterministic functions are allowed"
            )))
        }
    }
}

/// Plans the projection over an empty `events` table: the SQL must parse, name only
/// columns that exist, produce every key column, and call only deterministic functions
/// (no `random()`, `now()`, `uuid()`: DataFusion's `Volatility::Immutable` only).
/// Returns the output columns.
pub async fn check_projection(catalog: &Catalog, sql: &str, key: &[String]) -> Result<Vec<Column>> {
    let (_, frame) = plan_over_no_events(catalog, sql).await?;
    refuse_nondeterministic(
        frame.logical_plan(),
        "`projection.sql`",
        "a replay must give the same rows every time it runs (`verify` replays shards again and compares their bytes)",
    )?;
    let output = stored_schema(frame.schema().as_arrow()).map_err(Error::BadProjection)?;
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

/// Characters a Delta Lake column name may not hold without column mapping (Spark's rule).
const DELTA_NAME_FORBIDS: &str = " ,;{}()\n\t=";

/// The schema a projection's segments are written with: [`stored_type`] of each column;
/// `Err` names the first column a Delta Lake table cannot hold (by its type, or by a name
/// Spark refuses).
pub fn stored_schema(schema: &Schema) -> std::result::Result<Schema, String> {
    if let Some(name) = schema
        .fields()
        .iter()
        .map(|f| f.name())
        .find(|n| n.chars().any(|c| DELTA_NAME_FORBIDS.contains(c)))
    {
        return Err(format!(
            "output column `{}` has a character Spark and Databricks refuse in a Delta Lake column name (space, comma, semicolon, braces, parentheses, newline, tab or `=`); rename it with AS",
            name.escape_debug()
        ));
    }
    let fields = schema
        .fields()
        .iter()
        .map(|f| {
            stored_type(f.data_type())
                .map(|ty| f.as_ref().clone().with_data_type(ty))
                .map_err(|inner| {
                    format!(
                        "output column `{}` is of type {}, which a Delta Lake table (the target) cannot hold ({inner}); cast it in the SQL, for example to BIGINT, DOUBLE or VARCHAR",
                        f.name(),
                        f.data_type()
                    )
                })
        })
        .collect::<std::result::Result<Vec<Field>, String>>()?;
    Ok(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// The type a projection column of type `ty` is written as. The target is a Delta Lake
/// table, whose integers are all signed: an unsigned integer widens to the next signed type
/// (`UInt64` to `Decimal128(20, 0)`), so every value is kept and every Delta reader reads
/// it; a dictionary is written as its values; nested types map their children. `Err` for
/// a type Delta has none for (a duration, an interval, a time of day, a half float, a
/// union).
pub fn stored_type(ty: &DataType) -> std::result::Result<DataType, String> {
    map_types(ty, &|t| {
        Ok(match t {
            DataType::UInt8 => Some(DataType::Int16),
            DataType::UInt16 => Some(DataType::Int32),
            DataType::UInt32 => Some(DataType::Int64),
            DataType::UInt64 => Some(DataType::Decimal128(20, 0)),
            DataType::Dictionary(_, values) => Some(stored_type(values)?),
            DataType::Duration(_)
            | DataType::Interval(_)
            | DataType::Time32(_)
            | DataType::Time64(_)
            | DataType::Float16
            | DataType::Union(..) => return Err(format!("Delta has no {t} type")),
            _ => None,
        })
    })
}

/// `ty` with each type `map` replaces (`Some`) replaced, and the children of the nested
/// types it leaves (`None`: lists, maps, structs) mapped the same way; field names,
/// nullability and metadata kept.
pub fn map_types<E>(
    ty: &DataType,
    map: &impl Fn(&DataType) -> std::result::Result<Option<DataType>, E>,
) -> std::result::Result<DataType, E> {
    if let Some(mapped) = map(ty)? {
        return Ok(mapped);
    }
    let field = |f: &Field| -> std::result::Result<Arc<Field>, E> {
        Ok(Arc::new(
            f.clone().with_data_type(map_types(f.data_type(), map)?),
        ))
    };
    Ok(match ty {
        DataType::List(f) => DataType::List(field(f)?),
        DataType::LargeList(f) => DataType::LargeList(field(f)?),
        DataType::FixedSizeList(f, n) => DataType::FixedSizeList(field(f)?, *n),
        DataType::Map(f, sorted) => DataType::Map(field(f)?, *sorted),
        DataType::Struct(fields) => DataType::Struct(
            fields
                .iter()
                .map(|f| field(f))
                .collect::<std::result::Result<Vec<_>, _>>()?
                .into(),
        ),
        other => other.clone(),
    })
}

/// Plans every invariant over an empty `projection` table shaped like the projection's
/// output, so a bad invariant (one that does not plan, or calls a function that is not
/// deterministic) is an input error before any work.
pub async fn check_invariants(catalog: &Catalog, sql: &str, invariants: &[String]) -> Result<()> {
    let (ctx, frame) = plan_over_no_events(catalog, sql).await?;
    ctx.register_table("projection", frame.into_view())
        .map_err(|e| Error::BadProjection(e.to_string()))?;
    for (i, invariant) in invariants.iter().enumerate() {
        let frame = ctx
            .sql_with_options(invariant, query_only())
            .await
            .map_err(|e| {
                Error::BadProjection(format!(
                    "`checks.invariants[{i}]` (`{invariant}`) does not plan over table `projection`: {e}"
                ))
            })?;
        refuse_nondeterministic(
            frame.logical_plan(),
            &format!("`checks.invariants[{i}]` (`{invariant}`)"),
            "a check must decide the same way every time the projection is checked",
        )?;
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn unsigned_columns_are_stored_widened_and_types_delta_lacks_are_named() {
        let list = |ty| DataType::List(Arc::new(Field::new("item", ty, true)));
        assert_eq!(stored_type(&DataType::UInt8), Ok(DataType::Int16));
        assert_eq!(stored_type(&DataType::UInt32), Ok(DataType::Int64));
        assert_eq!(
            stored_type(&DataType::UInt64),
            Ok(DataType::Decimal128(20, 0))
        );
        assert_eq!(
            stored_type(&list(DataType::UInt16)),
            Ok(list(DataType::Int32))
        );
        assert_eq!(stored_type(&DataType::Utf8), Ok(DataType::Utf8));
        let schema = Schema::new(vec![
            Field::new("a", DataType::Int64, false),
            Field::new(
                "span",
                DataType::Duration(arrow::datatypes::TimeUnit::Microsecond),
                true,
            ),
        ]);
        let err = stored_schema(&schema).unwrap_err();
        assert!(err.contains("`span`") && err.contains("Duration"), "{err}");
        let spaced = Schema::new(vec![Field::new("balance (cents)", DataType::Int64, true)]);
        let err = stored_schema(&spaced).unwrap_err();
        assert!(err.contains("`balance (cents)`"), "{err}");
    }

    fn catalog() -> Catalog {
        Catalog::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/accounts/contracts"),
        )
        .unwrap()
    }

    const KEY: &[&str] = &["account_id"];

    fn key() -> Vec<String> {
        KEY.iter().map(|k| (*k).to_owned()).collect()
    }

    #[tokio::test]
    async fn functions_that_are_not_deterministic_are_refused_by_name() {
        let catalog = catalog();
        for (sql, function) in [
            (
                "SELECT stream_id AS account_id, max(seq) + random() AS x FROM events GROUP BY stream_id",
                "random",
            ),
            (
                "SELECT stream_id AS account_id, max(now()) AS x FROM events GROUP BY stream_id",
                "now",
            ),
            (
                "SELECT stream_id AS account_id, max(uuid()) AS x FROM events GROUP BY stream_id",
                "uuid",
            ),
            (
                "SELECT stream_id AS account_id, count(*) AS x FROM events WHERE occurred_at < current_date() GROUP BY stream_id",
                "current_date",
            ),
            // in a subquery, in a CTE, in a join condition
            (
                "SELECT e.stream_id AS account_id, count(*) AS x FROM events e WHERE e.seq IN (SELECT max(seq) FROM events WHERE random() < 2 GROUP BY stream_id) GROUP BY e.stream_id",
                "random",
            ),
            (
                "WITH t AS (SELECT stream_id, uuid() AS u FROM events) SELECT stream_id AS account_id, max(u) AS x FROM t GROUP BY stream_id",
                "uuid",
            ),
            (
                "SELECT a.stream_id AS account_id, count(*) AS x FROM events a JOIN events b ON a.stream_id = b.stream_id AND b.seq < random() * 10 GROUP BY a.stream_id",
                "random",
            ),
            (
                "SELECT stream_id AS account_id, count(*) AS x FROM events WHERE EXISTS (SELECT 1 WHERE now() IS NOT NULL) GROUP BY stream_id",
                "now",
            ),
        ] {
            let err = check_projection(&catalog, sql, &key()).await.unwrap_err();
            let message = err.to_string();
            assert!(matches!(err, Error::BadProjection(_)), "{sql}: {message}");
            assert!(
                message.contains("`projection.sql`")
                    && message.contains(&format!("`{function}()`")),
                "{sql}: {message}"
            );
        }
    }

    #[tokio::test]
    async fn recursive_queries_are_refused() {
        let catalog = catalog();
        let sql = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT e.stream_id AS account_id, count(*) AS x FROM events e CROSS JOIN r GROUP BY e.stream_id";
        let message = check_projection(&catalog, sql, &key())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("`projection.sql` uses a recursive query (`WITH RECURSIVE`)"),
            "{message}"
        );
        let plain = "SELECT stream_id AS account_id, count(*) AS n FROM events GROUP BY stream_id";
        let message = check_invariants(
            &catalog,
            plain,
            &["WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT * FROM projection, r WHERE i < 0".to_owned()],
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            message.contains("`checks.invariants[0]`") && message.contains("recursive query"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn deterministic_projections_and_invariants_plan() {
        let catalog = catalog();
        let sql = "SELECT e.stream_id AS account_id, e.seq, abs(e.seq) AS a, to_timestamp_seconds(1) AS t, md5(e.stream_id) AS h FROM events e WHERE e.seq IN (SELECT max(seq) FROM events GROUP BY stream_id)";
        check_projection(&catalog, sql, &key()).await.unwrap();
        check_invariants(
            &catalog,
            sql,
            &["SELECT * FROM projection WHERE seq < 0 OR h IS NULL".to_owned()],
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn invariants_that_are_not_deterministic_are_refused_by_index() {
        let catalog = catalog();
        let sql = "SELECT stream_id AS account_id, count(*) AS n FROM events GROUP BY stream_id";
        let invariants = vec![
            "SELECT * FROM projection WHERE n < 0".to_owned(),
            "SELECT * FROM projection WHERE n > random() * 10".to_owned(),
        ];
        let message = check_invariants(&catalog, sql, &invariants)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("`checks.invariants[1]`") && message.contains("`random()`"),
            "{message}"
        );
    }
}
