//! Batch upcasting: every payload of one (event type, version) along the chain to the
//! target version, then validation against the target schema.
//!
//! A chain is planned once per (type, from-version) as segments: runs of native steps
//! (applied to a `serde_json` map in place), SQL steps (one DataFusion evaluation per
//! chunk of 512 events) and runs of consecutive jq steps (one conversion to jaq's value
//! type before the run and one back after it; a chain that starts with jq parses the
//! payload text straight into jaq's value). An event never fails its batch: each one gets
//! its own [`Outcome`].
//!
//! The batch is walked as few times as the SQL steps allow: everything between two SQL
//! steps (parsing, native and jq steps, and validation after the last one) runs one event
//! at a time, while its map is still in the cache. A batch of 8192 parsed maps is several
//! MiB, so a walk per step over the whole batch costs a cache miss per event and step;
//! that, not the steps themselves, was most of the upcast's cost. For the same reason
//! [`Upcaster::upcast_each`] hands each outcome to the caller as soon as it is made.

use std::collections::HashMap;
use std::sync::Arc;

use jsonschema::Validator;
use replayfleet_config::AnomalyKind;
use serde_json::{Map, Value};

use crate::catalog::{Contracts, PathStatus};
use crate::jq;
use crate::lite::{Lite, LiteJson, Obj, parse_object};
use crate::schema::{self, ColumnKind};
use crate::step::Step;

/// The result of upcasting one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The payload at the target version, valid against its schema.
    Ok(Map<String, Value>),
    /// The event cannot be upcast; the policy of `kind` decides what happens to it.
    Anomaly {
        /// `InvalidPayload`, `UpcastFailed`, `UnknownType`, `UnknownVersion` or `NoUpcastPath`.
        kind: AnomalyKind,
        /// The failing step, e.g. `version 2, step 3 (cast)`.
        step: Option<String>,
        /// What went wrong.
        message: String,
    },
}

impl Outcome {
    /// The payload, if the event upcast.
    pub fn ok(&self) -> Option<&Map<String, Value>> {
        match self {
            Outcome::Ok(m) => Some(m),
            Outcome::Anomaly { .. } => None,
        }
    }

    /// The anomaly kind, if any.
    pub fn anomaly_kind(&self) -> Option<AnomalyKind> {
        match self {
            Outcome::Ok(_) => None,
            Outcome::Anomaly { kind, .. } => Some(*kind),
        }
    }

    fn of(result: Result<&Obj<'_>, Anomaly>) -> Outcome {
        match result {
            Ok(obj) => Outcome::Ok(obj.to_map()),
            Err(Anomaly {
                kind,
                step,
                message,
            }) => Outcome::Anomaly {
                kind,
                step,
                message,
            },
        }
    }
}

/// Why an event did not upcast.
#[derive(Debug, Clone, PartialEq)]
pub struct Anomaly {
    /// `InvalidPayload`, `UpcastFailed`, `UnknownType`, `UnknownVersion` or `NoUpcastPath`.
    pub kind: AnomalyKind,
    /// The failing step, e.g. `version 2, step 3 (cast)`.
    pub step: Option<String>,
    /// What went wrong.
    pub message: String,
}

impl Anomaly {
    fn new(kind: AnomalyKind, step: Option<&str>, message: String) -> Anomaly {
        Anomaly {
            kind,
            step: step.map(str::to_owned),
            message,
        }
    }
}

/// A step with its place in the catalog, for error messages.
#[derive(Debug, Clone)]
struct Labeled {
    label: String,
    step: Arc<Step>,
}

/// Steps that run on one event at a time.
#[derive(Debug, Clone)]
enum Segment {
    Native(Vec<Labeled>),
    Jq(Vec<Labeled>),
}

/// What a chain ends with: the schema to validate against, and how many fields to make
/// room for when parsing a payload (the schema's top-level properties), so that the
/// object does not grow while it is parsed and upcast.
#[derive(Debug, Clone)]
struct Target {
    validator: Arc<Validator<LiteJson>>,
    fields: usize,
    /// The top-level `type: integer` properties: typed columns of Arrow type Int64.
    integers: Arc<[String]>,
}

/// The steps from one version to another, cut at each SQL step (which needs the whole
/// batch), and the schema to validate against.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Per-event segments before the first SQL step.
    head: Vec<Segment>,
    /// Each SQL step with the per-event segments after it.
    tail: Vec<(Labeled, Vec<Segment>)>,
    target: Target,
}

#[derive(Debug)]
struct TypeChain {
    /// Each version with its steps from the previous one and its target, oldest first.
    versions: Vec<(i32, Vec<Arc<Step>>, Target)>,
    /// Plans to the target, by from-version (every version but the target).
    plans: HashMap<i32, Arc<Plan>>,
}

impl TypeChain {
    fn target(&self) -> i32 {
        self.versions[self.versions.len() - 1].0
    }

    fn status(&self, version: i32) -> PathStatus {
        let first = self.versions[0].0;
        let target = self.target();
        if version == target {
            PathStatus::AtTarget
        } else if version > target {
            PathStatus::Anomaly(AnomalyKind::UnknownVersion)
        } else if version < first || !self.versions.iter().any(|v| v.0 == version) {
            PathStatus::Anomaly(AnomalyKind::NoUpcastPath)
        } else {
            PathStatus::Upcastable {
                chain: self
                    .versions
                    .iter()
                    .map(|v| v.0)
                    .filter(|v| *v > version)
                    .collect(),
            }
        }
    }

    /// Segments from `from` to `to` (both declared, `from <= to`).
    fn plan(&self, from: i32, to: i32) -> Option<Plan> {
        let target = self.versions.iter().find(|v| v.0 == to)?;
        if !self.versions.iter().any(|v| v.0 == from) || from > to {
            return None;
        }
        let mut head: Vec<Segment> = Vec::new();
        let mut tail: Vec<(Labeled, Vec<Segment>)> = Vec::new();
        for (version, steps, _) in self.versions.iter().filter(|v| v.0 > from && v.0 <= to) {
            for (i, step) in steps.iter().enumerate() {
                let labeled = Labeled {
                    label: format!("version {version}, step {} ({})", i + 1, step.kind()),
                    step: Arc::clone(step),
                };
                if let Step::Sql(_) = step.as_ref() {
                    tail.push((labeled, Vec::new()));
                    continue;
                }
                let segments = tail.last_mut().map_or(&mut head, |(_, after)| after);
                match (step.as_ref(), segments.last_mut()) {
                    (Step::Jq(_), Some(Segment::Jq(run))) => run.push(labeled),
                    (Step::Jq(_), _) => segments.push(Segment::Jq(vec![labeled])),
                    (_, Some(Segment::Native(run))) => run.push(labeled),
                    (_, _) => segments.push(Segment::Native(vec![labeled])),
                }
            }
        }
        Some(Plan {
            head,
            tail,
            target: target.2.clone(),
        })
    }
}

/// Upcasts batches of payloads to their type's target version. Built with the catalog;
/// cheap to clone.
#[derive(Debug, Clone)]
pub struct Upcaster {
    chains: Arc<HashMap<String, TypeChain>>,
}

/// One event while it moves along its chain.
enum Work<'a> {
    Obj(Obj<'a>),
    Val(jaq_json::Val),
    Done(Anomaly),
}

impl Upcaster {
    pub(crate) fn new(contracts: &Contracts) -> Upcaster {
        let chains = contracts
            .iter()
            .map(|(name, c)| {
                let mut chain = TypeChain {
                    versions: c
                        .versions
                        .iter()
                        .map(|v| {
                            let target = Target {
                                validator: Arc::clone(&v.validator),
                                fields: schema::properties(&v.schema).count(),
                                integers: schema::properties(&v.schema)
                                    .filter(|(_, p)| {
                                        ColumnKind::of_property(p) == ColumnKind::Int64
                                    })
                                    .map(|(name, _)| name.clone())
                                    .collect(),
                            };
                            (v.version, v.steps.clone(), target)
                        })
                        .collect(),
                    plans: HashMap::new(),
                };
                let target = chain.target();
                let plans = chain
                    .versions
                    .iter()
                    .filter(|v| v.0 != target)
                    .filter_map(|v| Some((v.0, Arc::new(chain.plan(v.0, target)?))))
                    .collect();
                chain.plans = plans;
                (name.clone(), chain)
            })
            .collect();
        Upcaster {
            chains: Arc::new(chains),
        }
    }

    /// Where a (type, version) stands.
    pub fn path(&self, event_type: &str, version: i32) -> PathStatus {
        match self.chains.get(event_type) {
            None => PathStatus::Anomaly(AnomalyKind::UnknownType),
            Some(chain) => chain.status(version),
        }
    }

    /// Upcasts every payload (JSON text, all of `event_type` at `from_version`) to the target
    /// version and validates it against the target schema. One outcome per payload, in
    /// input order; never fails the batch because of one event.
    pub fn upcast_batch(
        &self,
        event_type: &str,
        from_version: i32,
        payloads: &[&str],
    ) -> Vec<Outcome> {
        let mut outcomes = Vec::with_capacity(payloads.len());
        self.upcast_each(event_type, from_version, payloads, |_, o| outcomes.push(o));
        outcomes
    }

    /// Like [`Upcaster::upcast_batch`], handing each outcome to `sink` with its payload's
    /// index, in input order, as soon as it is made.
    pub fn upcast_each(
        &self,
        event_type: &str,
        from_version: i32,
        payloads: &[&str],
        mut sink: impl FnMut(usize, Outcome),
    ) {
        self.upcast_lite(event_type, from_version, payloads, |i, result| {
            sink(i, Outcome::of(result))
        });
    }

    /// The upcast of the replay's hot path: like [`Upcaster::upcast_each`], but each
    /// upcast payload is lent to `sink` as a light JSON object ([`Obj`]), whose strings
    /// borrow from the payload's text where they can; nothing is converted to a
    /// `serde_json` map. Chains without an SQL step take each event from text to outcome
    /// before the next one is parsed, so a caller that consumes the outcome at once keeps
    /// one event in memory (and in the cache), not a batch; an SQL step needs a chunk of
    /// events and holds it until its evaluation.
    pub fn upcast_lite(
        &self,
        event_type: &str,
        from_version: i32,
        payloads: &[&str],
        mut sink: impl FnMut(usize, Result<&Obj<'_>, Anomaly>),
    ) {
        let Some(chain) = self.chains.get(event_type) else {
            return uniform(payloads.len(), AnomalyKind::UnknownType, sink, || {
                format!("event type {event_type} is not in the catalog")
            });
        };
        match chain.status(from_version) {
            PathStatus::AtTarget => {
                let target = &chain.versions[chain.versions.len() - 1].2;
                for (i, p) in payloads.iter().enumerate() {
                    match parse_object(p, target.fields) {
                        Ok(obj) => finish_obj(obj, target, |r| sink(i, r)),
                        Err(e) => sink(i, Err(Anomaly::new(AnomalyKind::InvalidPayload, None, e))),
                    }
                }
            }
            PathStatus::Upcastable { .. } => match chain.plans.get(&from_version) {
                Some(plan) => run_plan(plan, payloads, sink),
                None => uniform(payloads.len(), AnomalyKind::NoUpcastPath, sink, || {
                    format!("no upcast path from {event_type} version {from_version}")
                }),
            },
            PathStatus::Anomaly(kind) => {
                let target = chain.target();
                uniform(payloads.len(), kind, sink, || match kind {
                    AnomalyKind::UnknownVersion => format!(
                        "{event_type} version {from_version} is newer than the catalog's newest, {target}"
                    ),
                    _ => format!(
                        "{event_type} version {from_version} is not declared: no upcast path to version {target}"
                    ),
                })
            }
        }
    }

    /// Upcasts JSON values from one version to another (validated against `to`'s schema);
    /// `None` when either version is not declared. Used by the test matrix to check
    /// examples at their own version, and by `explain` to show each step of a chain.
    pub fn upcast_values(
        &self,
        event_type: &str,
        from: i32,
        to: i32,
        payloads: &[Value],
    ) -> Option<Vec<Outcome>> {
        let plan = self.chains.get(event_type)?.plan(from, to)?;
        let texts: Vec<String> = payloads.iter().map(Value::to_string).collect();
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let mut outcomes = Vec::with_capacity(texts.len());
        run_plan(&plan, &texts, |_, r| outcomes.push(Outcome::of(r)));
        Some(outcomes)
    }
}

fn uniform(
    n: usize,
    kind: AnomalyKind,
    mut sink: impl FnMut(usize, Result<&Obj<'_>, Anomaly>),
    message: impl Fn() -> String,
) {
    let message = message();
    for i in 0..n {
        sink(i, Err(Anomaly::new(kind, None, message.clone())));
    }
}

/// Validates an upcast object and lends it to `sink`, or hands over why it is invalid.
/// Valid means against the target schema, and every integer property within its typed
/// column's range (JSON Schema's `integer` has none: 2^63 and 1e300 are integers).
fn finish_obj(obj: Obj<'_>, target: &Target, sink: impl FnOnce(Result<&Obj<'_>, Anomaly>)) {
    let value = Lite::Obj(obj);
    match schema::first_error(&target.validator, &value) {
        None => match &value {
            Lite::Obj(obj) => match out_of_range(obj, &target.integers) {
                None => sink(Ok(obj)),
                Some(message) => sink(Err(Anomaly::new(
                    AnomalyKind::InvalidPayload,
                    None,
                    message,
                ))),
            },
            _ => unreachable!("built from an object"),
        },
        Some(e) => sink(Err(Anomaly::new(
            AnomalyKind::InvalidPayload,
            None,
            format!("not valid against the target schema {e}"),
        ))),
    }
}

/// The first integer property whose value its Int64 column cannot hold, as a message.
fn out_of_range(obj: &Obj<'_>, integers: &[String]) -> Option<String> {
    integers.iter().find_map(|name| {
        let value = obj.get(name)?;
        if value.is_null() || value.as_int64().is_some() {
            return None;
        }
        Some(format!(
            "property {name}: {} does not fit its Int64 typed column",
            crate::step::describe_lite(value)
        ))
    })
}

fn failed<'a>(label: &str, message: String) -> Work<'a> {
    Work::Done(Anomaly::new(
        AnomalyKind::UpcastFailed,
        Some(label),
        message,
    ))
}

fn run_plan<'a>(
    plan: &'a Plan,
    payloads: &[&'a str],
    mut sink: impl FnMut(usize, Result<&Obj<'_>, Anomaly>),
) {
    let starts_with_jq = matches!(plan.head.first(), Some(Segment::Jq(_)));
    let parse = |text: &'a str| -> Work<'a> {
        if starts_with_jq {
            match jq::parse_val(text) {
                Ok(v @ jaq_json::Val::Obj(_)) => Work::Val(v),
                Ok(_) => invalid("payload is not a JSON object".to_owned()),
                Err(e) => invalid(format!("payload is not valid JSON: {e}")),
            }
        } else {
            match parse_object(text, plan.target.fields) {
                Ok(m) => Work::Obj(m),
                Err(e) => invalid(e),
            }
        }
    };
    if plan.tail.is_empty() {
        // No SQL step: each event goes from text to outcome, and on to the sink, in one go.
        for (i, text) in payloads.iter().enumerate() {
            finish(run_segments(&plan.head, parse(text)), &plan.target, |r| {
                sink(i, r)
            });
        }
        return;
    }
    // An SQL step needs its events together; a few hundred at a time keep their objects
    // in the cache from parse to outcome. An event's result never depends on its
    // neighbours, so the chunk size changes nothing but speed.
    for (c, chunk) in payloads.chunks(SQL_CHUNK_ROWS).enumerate() {
        run_sql_chunk(plan, chunk, &parse, |i, o| sink(c * SQL_CHUNK_ROWS + i, o));
    }
}

/// Events per SQL evaluation inside an upcast batch.
const SQL_CHUNK_ROWS: usize = 512;

/// Takes a chunk of a chain with SQL steps from text to outcomes.
fn run_sql_chunk<'a>(
    plan: &'a Plan,
    payloads: &[&'a str],
    parse: &impl Fn(&'a str) -> Work<'a>,
    mut sink: impl FnMut(usize, Result<&Obj<'_>, Anomaly>),
) {
    let mut work: Vec<Work<'a>> = payloads
        .iter()
        .map(|text| run_segments(&plan.head, parse(text)))
        .collect();
    let last = plan.tail.len() - 1;
    for (i, (s, after)) in plan.tail.iter().enumerate() {
        let Step::Sql(sql) = s.step.as_ref() else {
            unreachable!("a plan's tail starts each run with a sql step")
        };
        let refs: Vec<&Obj<'a>> = work
            .iter()
            .filter_map(|w| match w {
                Work::Obj(m) => Some(m),
                _ => None,
            })
            .collect();
        let mut values = sql.eval_values(&refs);
        // Every event in order: the live ones (the nth is the step's nth row) take their
        // computed fields in place; after the last step each outcome goes to the sink
        // right away.
        let mut n = 0;
        for (row, w) in work.iter_mut().enumerate() {
            if let Work::Obj(m) = w {
                match values.take(n) {
                    Ok(computed) => {
                        for (field, value) in sql.fields().zip(computed) {
                            // A field the payload has keeps its place.
                            m.insert(std::borrow::Cow::Borrowed(field), value);
                        }
                        if !after.is_empty() {
                            let taken = std::mem::replace(w, Work::Obj(Obj::default()));
                            *w = run_segments(after, taken);
                        }
                    }
                    Err(e) => *w = failed(&s.label, e),
                }
                n += 1;
            }
            if i == last {
                let taken = std::mem::replace(w, Work::Obj(Obj::default()));
                finish(taken, &plan.target, |r| sink(row, r));
            }
        }
    }
}

/// Runs per-event segments on one event.
fn run_segments<'a>(segments: &'a [Segment], mut w: Work<'a>) -> Work<'a> {
    for segment in segments {
        w = match (segment, w) {
            (_, done @ Work::Done(_)) => return done,
            (Segment::Native(steps), Work::Obj(mut obj)) => {
                match steps
                    .iter()
                    .find_map(|s| s.step.apply_native(&mut obj).err().map(|e| (s, e)))
                {
                    Some((s, e)) => return failed(&s.label, e),
                    None => Work::Obj(obj),
                }
            }
            // Only a chain's first segment sees a jaq value, and it is a jq one.
            (Segment::Native(_), w @ Work::Val(_)) => w,
            (Segment::Jq(steps), w) => {
                let mut val = match w {
                    Work::Obj(m) => jq::obj_to_val(m),
                    Work::Val(v) => v,
                    Work::Done(_) => unreachable!("matched above"),
                };
                for s in steps {
                    match jq_step(s, val) {
                        Ok(v) => val = v,
                        Err(e) => return failed(&s.label, e),
                    }
                }
                match jq::val_into_obj(val) {
                    Ok(m) => Work::Obj(m),
                    Err(e) => failed(&steps[steps.len() - 1].label, e),
                }
            }
        };
    }
    w
}

/// Validates an event at the end of its chain and hands it to `sink`.
fn finish(w: Work<'_>, target: &Target, sink: impl FnOnce(Result<&Obj<'_>, Anomaly>)) {
    match w {
        Work::Obj(m) => finish_obj(m, target, sink),
        Work::Val(v) => match jq::val_into_obj(v) {
            Ok(m) => finish_obj(m, target, sink),
            Err(e) => sink(Err(Anomaly::new(AnomalyKind::InvalidPayload, None, e))),
        },
        Work::Done(o) => sink(Err(o)),
    }
}

fn jq_step(s: &Labeled, val: jaq_json::Val) -> Result<jaq_json::Val, String> {
    let Step::Jq(program) = s.step.as_ref() else {
        unreachable!("a jq segment holds jq steps")
    };
    let out = program.run(val)?;
    match out {
        jaq_json::Val::Obj(_) => Ok(out),
        _ => jq::val_into_obj(out).map(|_| jaq_json::Val::Null),
    }
}

fn invalid<'a>(message: String) -> Work<'a> {
    Work::Done(Anomaly::new(AnomalyKind::InvalidPayload, None, message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::tests::example_catalog;
    use crate::catalog::{Catalog, CatalogFile};
    use crate::lite::parse_object;
    use serde_json::json;

    fn one(c: &Catalog, t: &str, v: i32, payload: &str) -> Outcome {
        c.upcaster().upcast_batch(t, v, &[payload]).pop().unwrap()
    }

    fn ok(o: Outcome) -> Value {
        match o {
            Outcome::Ok(m) => Value::Object(m),
            other => panic!("expected ok, got {other:?}"),
        }
    }

    fn anomaly(o: Outcome) -> (AnomalyKind, Option<String>, String) {
        match o {
            Outcome::Anomaly {
                kind,
                step,
                message,
            } => (kind, step, message),
            other => panic!("expected an anomaly, got {other:?}"),
        }
    }

    #[test]
    fn chains_one_to_three_on_the_example_catalog() {
        let c = example_catalog();
        assert_eq!(
            ok(one(&c, "AccountOpened", 1, r#"{"owner": "Acme GmbH"}"#)),
            json!({"holder": {"name": "Acme GmbH", "kind": "company"}, "currency": "EUR"})
        );
        assert_eq!(
            ok(one(
                &c,
                "AccountOpened",
                2,
                r#"{"owner_name": "Ada", "currency": "GBP", "opened_at": "2021-03-04T05:06:07Z"}"#
            )),
            json!({"holder": {"name": "Ada", "kind": "person"}, "currency": "GBP", "opened_at": "2021-03-04T05:06:07Z"})
        );
        assert_eq!(
            ok(one(&c, "Withdrawn", 1, r#"{"amt": "7.25", "memo": "atm"}"#)),
            json!({"amount_cents": 725, "currency": "EUR", "memo": "atm"})
        );
        assert_eq!(
            ok(one(&c, "Deposited", 1, r#"{"amount": 12.5}"#)),
            json!({"amount_cents": 1250, "currency": "EUR"})
        );
    }

    #[test]
    fn at_target_parses_and_validates_only() {
        let c = example_catalog();
        assert_eq!(
            ok(one(
                &c,
                "Deposited",
                2,
                r#"{"amount_cents": 5, "currency": "USD"}"#
            )),
            json!({"amount_cents": 5, "currency": "USD"})
        );
        let (kind, step, message) = anomaly(one(
            &c,
            "Deposited",
            2,
            r#"{"amount_cents": -5, "currency": "USD"}"#,
        ));
        assert_eq!((kind, step), (AnomalyKind::InvalidPayload, None));
        assert!(message.contains("/amount_cents"), "{message}");
        let (kind, _, message) = anomaly(one(
            &c,
            "AccountOpened",
            3,
            r#"{"holder": {"name": "x", "kind": "person"}, "currency": "EUR", "opened_at": "yesterday"}"#,
        ));
        assert_eq!(
            kind,
            AnomalyKind::InvalidPayload,
            "format date-time is asserted"
        );
        assert!(message.contains("/opened_at"), "{message}");
    }

    #[test]
    fn bad_payloads_are_invalid_payload() {
        let c = example_catalog();
        for (v, p) in [(1, "not json"), (1, "[1, 2]"), (2, "42"), (1, "")] {
            let (kind, _, _) = anomaly(one(&c, "Deposited", v, p));
            assert_eq!(kind, AnomalyKind::InvalidPayload, "{p}");
        }
        let (kind, _, _) = anomaly(one(&c, "AccountOpened", 2, "[]"));
        assert_eq!(
            kind,
            AnomalyKind::InvalidPayload,
            "a chain starting with jq"
        );
    }

    #[test]
    fn parsing_with_room_for_fields_is_serde_json_parsing() {
        for text in [
            r#"{"b": 1, "a": [2], "b": 3}"#,
            "{}",
            "null",
            "[1]",
            "42",
            "",
            r#"{"a": 1"#,
            r#"{"a": 1} x"#,
        ] {
            let plain = serde_json::from_str::<Map<String, Value>>(text)
                .map(|m| Value::Object(m).to_string())
                .map_err(|e| (e.is_data(), e.to_string()));
            for capacity in [0, 1, 8] {
                let with_room = parse_object(text, capacity)
                    .map(|m| m.to_json())
                    .map_err(|e| {
                        let data = e == "payload is not a JSON object";
                        let message = e.strip_prefix("payload is not valid JSON: ");
                        (data, message.unwrap_or_default().to_owned())
                    });
                match (&plain, &with_room) {
                    (Ok(a), Ok(b)) => assert_eq!(a, b, "{text}"),
                    (Err((true, _)), Err((true, _))) => {}
                    (Err((false, a)), Err((false, b))) => assert_eq!(a, b, "{text}"),
                    _ => panic!("{text}: {plain:?} vs {with_room:?}"),
                }
            }
        }
    }

    #[test]
    fn unknown_types_and_versions() {
        let c = example_catalog();
        assert_eq!(
            anomaly(one(&c, "Nope", 1, "{}")).0,
            AnomalyKind::UnknownType
        );
        assert_eq!(
            anomaly(one(&c, "Deposited", 3, "{}")).0,
            AnomalyKind::UnknownVersion
        );
        assert_eq!(
            anomaly(one(&c, "Deposited", 0, "{}")).0,
            AnomalyKind::NoUpcastPath
        );
    }

    #[test]
    fn a_failing_step_fails_its_event_only() {
        let c = example_catalog();
        let out = c.upcaster().upcast_batch(
            "Withdrawn",
            1,
            &[r#"{"amt": "1.5"}"#, r#"{"amt": "lots"}"#, r#"{"amt": "2"}"#],
        );
        assert_eq!(
            ok(out[0].clone()),
            json!({"amount_cents": 150, "currency": "EUR"})
        );
        let (kind, step, message) = anomaly(out[1].clone());
        assert_eq!(kind, AnomalyKind::UpcastFailed);
        assert_eq!(step.as_deref(), Some("version 2, step 2 (cast)"));
        assert!(message.contains("amount"), "{message}");
        assert_eq!(
            ok(out[2].clone()),
            json!({"amount_cents": 200, "currency": "EUR"})
        );
        // A string where SQL expects a number: the SQL step names the field.
        let out =
            c.upcaster()
                .upcast_batch("Deposited", 1, &[r#"{"amount": "x"}"#, r#"{"amount": 1}"#]);
        let (kind, step, message) = anomaly(out[0].clone());
        assert_eq!(
            (kind, step.as_deref()),
            (AnomalyKind::UpcastFailed, Some("version 2, step 1 (sql)"))
        );
        assert!(message.contains("field amount"), "{message}");
        assert_eq!(
            ok(out[1].clone()),
            json!({"amount_cents": 100, "currency": "EUR"})
        );
    }

    fn catalog(steps: &str) -> Catalog {
        let text = format!(
            "event_type: T\nversions:\n  - version: 1\n    schema: {{type: object}}\n  - version: 2\n    schema: {{type: object}}\n    upcast:\n{steps}"
        );
        Catalog::from_files(vec![CatalogFile {
            path: "t.yaml".into(),
            bytes: text.into_bytes(),
        }])
        .unwrap()
    }

    #[test]
    fn sql_errors_are_attributed_per_event() {
        let c = catalog("      - sql: {n: \"CAST(code AS BIGINT)\", m: \"code\"}\n");
        let payloads = [
            r#"{"code": "1"}"#,
            r#"{"code": "x"}"#,
            r#"{"code": 3}"#,
            r#"{}"#,
        ];
        let out = c.upcaster().upcast_batch("T", 1, &payloads);
        assert_eq!(ok(out[0].clone()), json!({"code": "1", "n": 1, "m": "1"}));
        let (kind, step, _) = anomaly(out[1].clone());
        assert_eq!(
            (kind, step.as_deref()),
            (AnomalyKind::UpcastFailed, Some("version 2, step 1 (sql)"))
        );
        assert_eq!(ok(out[2].clone()), json!({"code": 3, "n": 3, "m": "3"}));
        assert_eq!(ok(out[3].clone()), json!({"n": null, "m": null}));
        // Same events alone: same results (determinism across batch composition).
        for (i, p) in payloads.iter().enumerate() {
            assert_eq!(
                c.upcaster().upcast_batch("T", 1, &[p]).pop().unwrap(),
                out[i]
            );
        }
    }

    #[test]
    fn outcomes_do_not_depend_on_chunks_and_come_in_order() {
        // A native step, an SQL step, a native step after it: more events than one SQL
        // chunk holds, failures on both sides of each chunk boundary and of the step.
        let c = catalog(
            "      - cast: {code: string}\n      - sql: {n: \"CAST(code AS BIGINT)\"}\n      - rename: {n: k}\n",
        );
        let texts: Vec<String> = (0..SQL_CHUNK_ROWS * 2 + 7)
            .map(|i| match i % SQL_CHUNK_ROWS {
                0 => r#"{"code": "x"}"#.to_owned(), // fails the SQL step
                r if r == SQL_CHUNK_ROWS - 1 => r#"{"code": [1]}"#.to_owned(), // fails the cast
                _ => format!(r#"{{"code": {i}}}"#),
            })
            .collect();
        let payloads: Vec<&str> = texts.iter().map(String::as_str).collect();
        let mut seen = Vec::new();
        c.upcaster()
            .upcast_each("T", 1, &payloads, |i, o| seen.push((i, o)));
        assert!(
            seen.iter().enumerate().all(|(n, (i, _))| n == *i),
            "in order"
        );
        assert_eq!(seen.len(), payloads.len());
        for (i, outcome) in seen {
            let alone = c.upcaster().upcast_batch("T", 1, &[payloads[i]]).pop();
            assert_eq!(Some(&outcome), alone.as_ref(), "event {i}");
            match i % SQL_CHUNK_ROWS {
                0 => assert_eq!(
                    anomaly(outcome).1.as_deref(),
                    Some("version 2, step 2 (sql)")
                ),
                r if r == SQL_CHUNK_ROWS - 1 => assert_eq!(
                    anomaly(outcome).1.as_deref(),
                    Some("version 2, step 1 (cast)")
                ),
                _ => assert_eq!(ok(outcome), json!({"code": i.to_string(), "k": i})),
            }
        }
    }

    #[test]
    fn sql_sees_the_payload_before_the_step_and_after_earlier_steps() {
        // `a` is declared as an integer in version 1, so the renamed `b` is an Int64 column.
        let text = "event_type: T\nversions:\n  - version: 1\n    schema: {type: object, properties: {a: {type: integer}}}\n  - version: 2\n    schema: {type: object}\n    upcast:\n      - rename: {a: b}\n      - sql: {b: \"b + 1\", c: \"b * 10\"}\n";
        let c = Catalog::from_files(vec![CatalogFile {
            path: "t.yaml".into(),
            bytes: text.as_bytes().to_vec(),
        }])
        .unwrap();
        assert_eq!(ok(one(&c, "T", 1, r#"{"a": 1}"#)), json!({"b": 2, "c": 10}));
    }

    #[test]
    fn integers_beyond_int64_are_invalid_payloads_not_nulls() {
        let c = example_catalog();
        let (kind, step, message) = anomaly(one(
            &c,
            "Deposited",
            2,
            r#"{"amount_cents": 9223372036854775808, "currency": "USD"}"#,
        ));
        assert_eq!((kind, step), (AnomalyKind::InvalidPayload, None));
        assert_eq!(
            message,
            "property amount_cents: number 9223372036854775808 does not fit its Int64 typed column"
        );
        let text = "event_type: T\nversions:\n  - version: 1\n    schema: {type: object}\n  - version: 2\n    schema: {type: object, properties: {n: {type: integer}, m: {type: [integer, \"null\"]}, f: {type: number}}}\n    upcast:\n      - jq: '. + {n: .x} | del(.x)'\n";
        let c = Catalog::from_files(vec![CatalogFile {
            path: "t.yaml".into(),
            bytes: text.as_bytes().to_vec(),
        }])
        .unwrap();
        for (v, payload) in [
            (2, r#"{"n": 9223372036854775808}"#),
            (2, r#"{"n": 18446744073709551615}"#),
            (2, r#"{"n": -9223372036854775809}"#),
            (2, r#"{"n": 1e300}"#),
            (2, r#"{"n": -1e19}"#),
            (2, r#"{"n": 1, "m": 1e20}"#),
            (1, r#"{"x": 9223372036854775808}"#),
            (1, r#"{"x": 100000000000000000000000000000}"#),
        ] {
            let (kind, step, message) = anomaly(one(&c, "T", v, payload));
            assert_eq!(
                (kind, step),
                (AnomalyKind::InvalidPayload, None),
                "{payload}"
            );
            assert!(
                message.starts_with("property n: number ")
                    || message.starts_with("property m: number "),
                "{payload}: {message}"
            );
            assert!(
                message.ends_with("does not fit its Int64 typed column"),
                "{message}"
            );
        }
        // Non-integral values never pass the schema.
        let (kind, _, message) = anomaly(one(&c, "T", 2, r#"{"n": 1.5}"#));
        assert_eq!(kind, AnomalyKind::InvalidPayload);
        assert!(message.contains("/n"), "{message}");
        // What the column holds passes: the extremes, integral floats, nulls, floats in
        // a `number` property.
        for payload in [
            r#"{"n": 9223372036854775807, "m": -9223372036854775808}"#,
            r#"{"n": 12.0, "m": null}"#,
            r#"{"n": -9.1e18, "f": 1e300}"#,
            r#"{}"#,
        ] {
            ok(one(&c, "T", 2, payload));
        }
        assert_eq!(
            ok(one(&c, "T", 1, r#"{"x": 9223372036854775807}"#)),
            json!({"n": 9223372036854775807i64})
        );
    }

    #[test]
    fn jq_zero_or_several_outputs_or_non_objects_fail_the_event() {
        for (program, needle) in [
            ("empty", "no value"),
            (".a, .b", "several"),
            (".a", "not an object"),
            ("error(\"boom\")", "boom"),
        ] {
            let c = catalog(&format!("      - jq: '{program}'\n"));
            let (kind, step, message) = anomaly(one(&c, "T", 1, r#"{"a": 1}"#));
            assert_eq!(kind, AnomalyKind::UpcastFailed, "{program}");
            assert_eq!(step.as_deref(), Some("version 2, step 1 (jq)"));
            assert!(message.contains(needle), "{program}: {message}");
        }
    }

    #[test]
    fn consecutive_jq_steps_and_mixed_chains() {
        let c = catalog(
            "      - jq: '. + {x: 1}'\n      - jq: '.x += 1'\n      - rename: {x: \"y\"}\n      - jq: '{z: .y}'\n",
        );
        assert_eq!(ok(one(&c, "T", 1, r#"{"a": true}"#)), json!({"z": 2}));
    }
}
