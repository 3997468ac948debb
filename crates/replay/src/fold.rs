//! The fold: the projection SQL over a bucket's `events`, and what the replay learns from
//! the SQL's plan before reading anything.
//!
//! * **Which columns it reads**: from the optimized plan's scans of `events`. Only those
//!   columns are built (a payload is written back as JSON text only when `payload` is read).
//! * **Whether it is stream-local**: every output row depends on the events of one stream
//!   only (a fold grouped by `stream_id`, a one-to-one map keyed by `event_id`, windows
//!   partitioned by stream, joins on the stream). Then the shard's streams can be split
//!   into buckets, each folded on its own (on every thread) and the sorted outputs merged
//!   by key, with the very rows one fold over the whole shard gives. A projection that is
//!   not (a global aggregate, `GROUP BY currency`, a `LIMIT`, an `IN (subquery)` over
//!   other streams) folds the shard as one bucket, as it always did.
//!
//! The analysis is conservative: what it does not recognise is not stream-local.

use std::{collections::HashSet, path::Path, sync::Arc};

use arrow::{array::RecordBatch, datatypes::SchemaRef};
use datafusion::{
    common::Column,
    datasource::MemTable,
    logical_expr::{Distinct, Expr, JoinType, LogicalPlan},
};

use crate::{
    Error, Result,
    project::{keyed_query, limit_message, query_only, session},
};

/// Why folding shards apart may give two rows the same key, when it may: the projection is
/// not known to keep each key within one stream (a global aggregate, `GROUP BY currency`,
/// a key that is not the stream's). `None` when every key comes from one stream.
pub async fn split_hazard(
    catalog: &replayfleet_contracts::Catalog,
    sql: &str,
    key: &[String],
) -> Result<Option<String>> {
    let fold = Fold::new(&crate::project::events_schema(catalog), sql, key).await?;
    if fold.keyed_by_stream {
        return Ok(None);
    }
    Ok(Some(if fold.local {
        format!(
            "the projection folds each stream on its own, but its key ({}) holds no column \
             made from `stream_id` or `event_id`",
            key.join(", ")
        )
    } else {
        "the projection is not known to fold each stream on its own (an aggregate over \
         streams, such as a `GROUP BY` on a payload field, a global aggregate, a `LIMIT`)"
            .to_owned()
    }))
}

/// Where the rows of a plan node come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Locality {
    /// No `events` under it (a `VALUES` list, a constant).
    Const,
    /// Each row depends on the events of one stream; `keys` are the output columns whose
    /// value names that stream (`stream_id`, `event_id`, or what they became).
    Local { keys: HashSet<Column> },
    /// Rows can depend on several streams.
    Global,
}

/// The projection as the replay runs it.
#[derive(Debug, Clone)]
pub(crate) struct Fold {
    /// The keyed query (the user's SQL, sorted by the key).
    sql: String,
    /// Indices of the columns the SQL reads in the full `events` schema.
    pub read: Vec<usize>,
    /// Whether the shard's streams may be folded in buckets.
    pub local: bool,
    /// Whether a key column names the stream each row comes from (`stream_id`,
    /// `event_id` or what they became), so that no two streams — no two shards — give
    /// the same key.
    pub keyed_by_stream: bool,
    /// The output schema.
    pub output: SchemaRef,
}

impl Fold {
    /// Plans the projection over an empty `events` table of the full schema.
    pub(crate) async fn new(full: &SchemaRef, sql: &str, key: &[String]) -> Result<Fold> {
        let sql = keyed_query(sql, key);
        let ctx = session(64 * 1024 * 1024, None, 64 * 1024 * 1024)?;
        let table = MemTable::try_new(Arc::clone(full), vec![vec![]])
            .map_err(|e| Error::BadProjection(e.to_string()))?;
        ctx.register_table("events", Arc::new(table))
            .map_err(|e| Error::BadProjection(e.to_string()))?;
        let frame = ctx
            .sql_with_options(&sql, query_only())
            .await
            .map_err(|e| Error::BadProjection(format!("the SQL does not plan: {e}")))?;
        let output: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
        let optimized = ctx
            .state()
            .optimize(frame.logical_plan())
            .map_err(|e| Error::BadProjection(format!("the SQL does not plan: {e}")))?;
        let mut read = HashSet::new();
        columns_read(&optimized, full, &mut read);
        let mut read: Vec<usize> = read.into_iter().collect();
        read.sort_unstable();
        let (local, keyed_by_stream) = match locality(&optimized) {
            Locality::Local { keys } => (true, keys.iter().any(|c| key.contains(&c.name))),
            _ => (false, false),
        };
        Ok(Fold {
            sql,
            read,
            local,
            keyed_by_stream,
            output,
        })
    }

    /// Folds one bucket's `events` (of `schema`, in (partition, seq) order) in one
    /// DataFusion partition within `limits`: the rows, sorted by the key.
    pub(crate) async fn run(
        &self,
        shard: &str,
        schema: &SchemaRef,
        events: Vec<RecordBatch>,
        limits: &FoldLimits<'_>,
    ) -> Result<Vec<RecordBatch>> {
        let FoldLimits {
            memory,
            spill_max,
            spill_dir,
            scratch,
            deadline,
        } = *limits;
        let fail = |e: datafusion::error::DataFusionError| Error::Projection {
            shard: shard.to_owned(),
            message: limit_message(&e, spill_dir),
        };
        let ctx = session(memory, Some(scratch), spill_max)?;
        let table = MemTable::try_new(Arc::clone(schema), vec![events]).map_err(fail)?;
        ctx.register_table("events", Arc::new(table))
            .map_err(fail)?;
        let frame = ctx
            .sql_with_options(&self.sql, query_only())
            .await
            .map_err(fail)?;
        if frame.schema().as_arrow().fields() != self.output.fields() {
            return Err(Error::Projection {
                shard: shard.to_owned(),
                message: format!(
                    "the SQL's output columns changed with the columns read: {} instead of {}",
                    frame.schema().as_arrow(),
                    self.output
                ),
            });
        }
        let Some(deadline) = deadline else {
            return frame.collect().await.map_err(fail);
        };
        // DataFusion's operators yield to the runtime between batches, so that the
        // deadline can stop even a query that never ends (dropping it cancels it).
        match tokio::time::timeout_at(deadline.at, frame.collect()).await {
            Ok(result) => result.map_err(fail),
            Err(_) => Err(Error::Projection {
                shard: shard.to_owned(),
                message: format!(
                    "the projection SQL ran past its time budget of {} for one shard (`limits.projection_time`); it was stopped",
                    humantime::format_duration(deadline.budget)
                ),
            }),
        }
    }
}

/// What one fold may use: a memory pool of `memory` bytes, DataFusion's spill files in
/// `scratch` (a folder in `spill_dir`, which messages name), and the shard's deadline.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FoldLimits<'a> {
    pub memory: u64,
    pub spill_max: u64,
    pub spill_dir: Option<&'a Path>,
    pub scratch: &'a Path,
    pub deadline: Option<Deadline>,
}

/// When a shard's projection must be done, and the budget that set it (for messages).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    pub at: tokio::time::Instant,
    pub budget: std::time::Duration,
}

impl Deadline {
    /// `budget_ms` from now (`limits.projection_time`); none for 0 (no limit).
    pub(crate) fn after(budget_ms: u64) -> Option<Deadline> {
        let budget = std::time::Duration::from_millis(budget_ms);
        (budget_ms > 0).then(|| Deadline {
            at: tokio::time::Instant::now() + budget,
            budget,
        })
    }
}

/// Adds the indices (in `full`) of the `events` columns the plan's scans read.
fn columns_read(plan: &LogicalPlan, full: &SchemaRef, read: &mut HashSet<usize>) {
    if let LogicalPlan::TableScan(scan) = plan
        && scan.table_name.table() == "events"
    {
        match &scan.projection {
            None => read.extend(0..full.fields().len()),
            Some(p) => read.extend(p.iter().copied()),
        }
        for filter in &scan.filters {
            for c in filter.column_refs() {
                if let Ok(i) = full.index_of(&c.name) {
                    read.insert(i);
                }
            }
        }
    }
    for input in plan.inputs() {
        columns_read(input, full, read);
    }
    // Subqueries left in expressions (an optimizer that could not decorrelate them).
    let _ = plan.apply_expressions(|e| {
        e.apply(|e| {
            if let Expr::ScalarSubquery(s)
            | Expr::Exists(datafusion::logical_expr::expr::Exists { subquery: s, .. }) = e
            {
                columns_read(&s.subquery, full, read);
            }
            if let Expr::InSubquery(s) = e {
                columns_read(&s.subquery.subquery, full, read);
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        })
    });
}

use datafusion::common::tree_node::TreeNode;

fn has_subquery(e: &Expr) -> bool {
    e.exists(|e| {
        Ok(matches!(
            e,
            Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_)
        ))
    })
    .unwrap_or(true)
}

/// The column an expression is, through aliases.
fn column_of(e: &Expr) -> Option<&Column> {
    match e {
        Expr::Column(c) => Some(c),
        Expr::Alias(a) => column_of(&a.expr),
        _ => None,
    }
}

/// The output columns of `plan`, in order.
fn output_columns(plan: &LogicalPlan) -> Vec<Column> {
    plan.schema().columns()
}

fn locality(plan: &LogicalPlan) -> Locality {
    use Locality::*;
    let mut subquery = false;
    let _ = plan.apply_expressions(|e| {
        subquery |= has_subquery(e);
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    });
    if subquery {
        return Global;
    }
    match plan {
        LogicalPlan::TableScan(scan) => {
            if scan.table_name.table() != "events" || scan.fetch.is_some() {
                return Global;
            }
            let keys = output_columns(plan)
                .into_iter()
                .filter(|c| c.name == "stream_id" || c.name == "event_id")
                .collect();
            Local { keys }
        }
        LogicalPlan::Values(_) | LogicalPlan::EmptyRelation(_) => Const,
        LogicalPlan::Projection(p) => match locality(&p.input) {
            Local { keys } => {
                let out = output_columns(plan);
                let keys = p
                    .expr
                    .iter()
                    .zip(out)
                    .filter(|(e, _)| column_of(e).is_some_and(|c| keys.contains(c)))
                    .map(|(_, o)| o)
                    .collect();
                Local { keys }
            }
            other => other,
        },
        LogicalPlan::Filter(f) => locality(&f.input),
        LogicalPlan::Repartition(r) => locality(&r.input),
        LogicalPlan::Sort(s) => match s.fetch {
            Some(_) => not_const(locality(&s.input)),
            None => locality(&s.input),
        },
        LogicalPlan::Limit(l) => not_const(locality(&l.input)),
        LogicalPlan::SubqueryAlias(a) => match locality(&a.input) {
            Local { keys } => {
                let inner = output_columns(&a.input);
                let keys = inner
                    .into_iter()
                    .zip(output_columns(plan))
                    .filter(|(i, _)| keys.contains(i))
                    .map(|(_, o)| o)
                    .collect();
                Local { keys }
            }
            other => other,
        },
        LogicalPlan::Aggregate(agg) => match locality(&agg.input) {
            Local { keys } => {
                let out = output_columns(plan);
                let grouped: HashSet<Column> = agg
                    .group_expr
                    .iter()
                    .zip(out)
                    .filter(|(e, _)| column_of(e).is_some_and(|c| keys.contains(c)))
                    .map(|(_, o)| o)
                    .collect();
                let sets = agg
                    .group_expr
                    .iter()
                    .any(|e| matches!(e, Expr::GroupingSet(_)));
                if grouped.is_empty() || sets {
                    Global
                } else {
                    Local { keys: grouped }
                }
            }
            other => other,
        },
        LogicalPlan::Window(w) => match locality(&w.input) {
            Local { keys } => {
                let partitioned = w.window_expr.iter().all(|e| {
                    let mut e = e;
                    while let Expr::Alias(a) = e {
                        e = &a.expr;
                    }
                    match e {
                        Expr::WindowFunction(f) => f
                            .params
                            .partition_by
                            .iter()
                            .any(|p| column_of(p).is_some_and(|c| keys.contains(c))),
                        _ => false,
                    }
                });
                if partitioned { Local { keys } } else { Global }
            }
            other => other,
        },
        LogicalPlan::Distinct(d) => match d {
            Distinct::All(input) => match locality(input) {
                Local { keys } if !keys.is_empty() => Local { keys },
                Const => Const,
                _ => Global,
            },
            Distinct::On(on) => match locality(&on.input) {
                Local { keys }
                    if on
                        .on_expr
                        .iter()
                        .any(|e| column_of(e).is_some_and(|c| keys.contains(c))) =>
                {
                    let out: HashSet<Column> = output_columns(plan).into_iter().collect();
                    Local {
                        keys: keys.into_iter().filter(|k| out.contains(k)).collect(),
                    }
                }
                Const => Const,
                _ => Global,
            },
        },
        LogicalPlan::Join(j) => {
            let (left, right) = (locality(&j.left), locality(&j.right));
            let out: HashSet<Column> = output_columns(plan).into_iter().collect();
            let keep = |keys: HashSet<Column>| Local {
                keys: keys.into_iter().filter(|k| out.contains(k)).collect(),
            };
            match (left, right) {
                (Global, _) | (_, Global) => Global,
                (Const, Const) => Const,
                // A constant side may only be joined to events, never kept whole: its
                // unmatched rows would come out of every bucket.
                (Local { keys }, Const) => match j.join_type {
                    JoinType::Inner
                    | JoinType::Left
                    | JoinType::LeftSemi
                    | JoinType::LeftAnti
                    | JoinType::RightSemi => keep(keys),
                    _ => Global,
                },
                (Const, Local { keys }) => match j.join_type {
                    JoinType::Inner
                    | JoinType::Right
                    | JoinType::RightSemi
                    | JoinType::RightAnti
                    | JoinType::LeftSemi => keep(keys),
                    _ => Global,
                },
                (Local { keys: l }, Local { keys: r }) => {
                    let on_stream = j.on.iter().any(|(a, b)| {
                        let (a, b) = (column_of(a), column_of(b));
                        a.is_some_and(|a| l.contains(a)) && b.is_some_and(|b| r.contains(b))
                    });
                    if on_stream {
                        keep(l.into_iter().chain(r).collect())
                    } else {
                        Global
                    }
                }
            }
        }
        LogicalPlan::Union(u) => {
            let parts: Vec<Locality> = u.inputs.iter().map(|i| locality(i)).collect();
            if parts.iter().all(|p| *p == Const) {
                return Const;
            }
            if parts.iter().any(|p| !matches!(p, Local { .. })) {
                return Global;
            }
            // An output column names the stream when it does in every input.
            let out = output_columns(plan);
            let mut keys: HashSet<Column> = out.iter().cloned().collect();
            for (input, part) in u.inputs.iter().zip(parts) {
                let Local { keys: theirs } = part else {
                    unreachable!("checked above")
                };
                let cols = output_columns(input);
                keys.retain(|k| {
                    out.iter()
                        .position(|o| o == k)
                        .and_then(|i| cols.get(i))
                        .is_some_and(|c| theirs.contains(c))
                });
            }
            Local { keys }
        }
        LogicalPlan::Unnest(u) => match locality(&u.input) {
            Local { keys } => {
                let out: HashSet<Column> = output_columns(plan).into_iter().collect();
                Local {
                    keys: keys.into_iter().filter(|k| out.contains(k)).collect(),
                }
            }
            other => other,
        },
        _ => Global,
    }
}

/// A limit over a constant stays constant; over events it needs every stream.
fn not_const(input: Locality) -> Locality {
    match input {
        Locality::Const => Locality::Const,
        _ => Locality::Global,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema};

    fn events() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("event_id", DataType::Utf8, false),
            Field::new("stream_id", DataType::Utf8, false),
            Field::new("partition", DataType::Int32, false),
            Field::new("seq", DataType::Int64, false),
            Field::new("event_type", DataType::Utf8, false),
            Field::new("schema_version", DataType::Int32, false),
            Field::new("payload", DataType::Utf8, false),
            Field::new("amount_cents", DataType::Int64, true),
            Field::new("currency", DataType::Utf8, true),
        ]))
    }

    async fn fold(sql: &str, key: &[&str]) -> Fold {
        let key: Vec<String> = key.iter().map(|k| (*k).to_owned()).collect();
        Fold::new(&events(), sql, &key).await.unwrap()
    }

    #[tokio::test]
    async fn folds_per_stream_are_local() {
        for (sql, key) in [
            (
                "SELECT stream_id AS account_id, sum(amount_cents) AS b, count(*) AS n FROM events GROUP BY stream_id",
                "account_id",
            ),
            (
                "SELECT event_id, seq FROM events WHERE amount_cents > 0",
                "event_id",
            ),
            (
                "SELECT event_id, row_number() OVER (PARTITION BY stream_id ORDER BY seq) AS n FROM events",
                "event_id",
            ),
            (
                "SELECT e.stream_id, e.seq FROM events e WHERE e.seq = (SELECT max(s.seq) FROM events s WHERE s.stream_id = e.stream_id)",
                "stream_id",
            ),
            (
                "SELECT a.stream_id AS s, count(*) AS n FROM events a JOIN events b ON a.stream_id = b.stream_id GROUP BY a.stream_id",
                "s",
            ),
            (
                "SELECT DISTINCT stream_id, currency FROM events",
                "stream_id",
            ),
            (
                "SELECT e.event_id, r.rate FROM events e JOIN (VALUES ('EUR', 1.0), ('USD', 0.9)) AS r(cur, rate) ON e.currency = r.cur",
                "event_id",
            ),
            (
                "SELECT stream_id AS id, count(*) AS n FROM events GROUP BY stream_id UNION ALL SELECT event_id AS id, 1 AS n FROM events",
                "id",
            ),
        ] {
            let f = fold(sql, &[key]).await;
            assert!(f.local, "{sql}");
            assert!(f.keyed_by_stream, "{sql}");
        }
        // Local, but keyed by a payload field: two streams can give one key.
        let f = fold(
            "SELECT DISTINCT stream_id, currency FROM events",
            &["currency"],
        )
        .await;
        assert!(f.local && !f.keyed_by_stream);
    }

    #[tokio::test]
    async fn folds_across_streams_are_not() {
        for (sql, key) in [
            (
                "SELECT currency, sum(amount_cents) AS b FROM events GROUP BY currency",
                "currency",
            ),
            ("SELECT count(*) AS n, 1 AS k FROM events", "k"),
            (
                "SELECT event_id FROM events WHERE seq IN (SELECT max(seq) FROM events GROUP BY stream_id)",
                "event_id",
            ),
            (
                "SELECT event_id FROM events ORDER BY seq LIMIT 10",
                "event_id",
            ),
            (
                "SELECT event_id, row_number() OVER (ORDER BY seq) AS n FROM events",
                "event_id",
            ),
            (
                "SELECT stream_id, sum(amount_cents) AS b FROM events GROUP BY ROLLUP (stream_id)",
                "stream_id",
            ),
            (
                "SELECT a.event_id FROM events a JOIN events b ON a.seq = b.seq",
                "event_id",
            ),
            (
                "SELECT stream_id AS id FROM events UNION ALL SELECT 'x' AS id",
                "id",
            ),
            ("SELECT 1 AS k", "k"),
            ("SELECT DISTINCT currency FROM events", "currency"),
        ] {
            let f = fold(sql, &[key]).await;
            assert!(!f.local, "{sql}");
            assert!(!f.keyed_by_stream, "{sql}");
        }
    }

    #[tokio::test]
    async fn only_the_columns_read_are_built() {
        let f = fold(
            "SELECT stream_id AS account_id, sum(amount_cents) AS b FROM events WHERE event_type = 'Deposited' GROUP BY stream_id",
            &["account_id"],
        )
        .await;
        assert_eq!(f.read, vec![1, 4, 7]);
        let f = fold("SELECT * FROM events", &["event_id"]).await;
        assert_eq!(f.read, (0..9).collect::<Vec<_>>());
    }
}
