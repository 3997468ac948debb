//! The catalog: loading a folder of contract files, every static check, typed columns.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::DataType;
use jsonschema::Validator;
use replayfleet_config::{AnomalyKind, ENVELOPE_COLUMNS};
use serde_json::Value;
use serde_saphyr::Spanned;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::jq::JqProgram;
use crate::lite::{Lite, LiteJson};
use crate::raw::{self, RawFile};
use crate::schema::{self, ColumnKind};
use crate::sql::{self, SqlStep};
use crate::step::{CastTo, STEP_KINDS, Step};
use crate::upcast::Upcaster;

/// One file of the catalog, as loaded: its path relative to the catalog folder (with `/`)
/// and its bytes. The plan snapshots these, so a catalog can be rebuilt anywhere.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CatalogFile {
    /// Path relative to the catalog folder, `/`-separated.
    pub path: String,
    /// The file's bytes.
    pub bytes: Vec<u8>,
}

/// One example of a version: `input` (a payload of `from_version`) must upcast to `expect`
/// (a payload of the version that holds the example).
#[derive(Debug, Clone)]
pub struct Example {
    /// The version of `input`.
    pub from_version: i32,
    /// The input payload.
    pub input: Value,
    /// The expected payload at the example's version.
    pub expect: Value,
}

/// One version of an event type's contract.
#[derive(Debug, Clone)]
pub struct VersionContract {
    pub(crate) version: i32,
    pub(crate) schema: Value,
    pub(crate) validator: Arc<Validator<LiteJson>>,
    /// Steps from the previous version; empty for the first.
    pub(crate) steps: Vec<Arc<Step>>,
    pub(crate) examples: Vec<Example>,
}

impl VersionContract {
    /// The version number.
    pub fn version(&self) -> i32 {
        self.version
    }
    /// The payload's JSON Schema.
    pub fn schema(&self) -> &Value {
        &self.schema
    }
    /// The kinds of the upcast steps from the previous version (`rename`, `sql`...).
    pub fn step_kinds(&self) -> Vec<&'static str> {
        self.steps.iter().map(|s| s.kind()).collect()
    }
    /// The version's examples.
    pub fn examples(&self) -> &[Example] {
        &self.examples
    }
}

/// Every version of one event type, oldest first; the last is the target.
#[derive(Debug, Clone)]
pub struct EventContract {
    pub(crate) event_type: String,
    pub(crate) file: String,
    pub(crate) versions: Vec<VersionContract>,
}

impl EventContract {
    /// The event type.
    pub fn event_type(&self) -> &str {
        &self.event_type
    }
    /// The file that declares it, relative to the catalog folder.
    pub fn file(&self) -> &str {
        &self.file
    }
    /// Versions, oldest first.
    pub fn versions(&self) -> &[VersionContract] {
        &self.versions
    }
    /// The newest version: every event is upcast to it.
    pub fn target(&self) -> &VersionContract {
        // A contract has at least one version: checked at load.
        &self.versions[self.versions.len() - 1]
    }
    /// One version, if declared.
    pub fn version(&self, version: i32) -> Option<&VersionContract> {
        self.versions
            .binary_search_by_key(&version, |v| v.version)
            .ok()
            .map(|i| &self.versions[i])
    }
}

/// A typed payload column of the `events` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypedColumn {
    /// The property name.
    pub name: String,
    /// Its Arrow type: integer→Int64, number→Float64, string→Utf8, boolean→Boolean,
    /// string with `format: date-time`→Timestamp(µs, UTC), anything else→Utf8 JSON text.
    pub data_type: DataType,
    /// The event types whose target schema declares it, sorted.
    pub event_types: Vec<String>,
}

/// Where an event of a (type, version) stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathStatus {
    /// Already at the target version: parse and validate only.
    AtTarget,
    /// Upcast through these versions, in order, ending with the target.
    Upcastable {
        /// The versions whose steps run, in order.
        chain: Vec<i32>,
    },
    /// No way to the target: `UnknownType`, `UnknownVersion` (newer than the newest) or
    /// `NoUpcastPath` (older than the first, or between declared versions).
    Anomaly(AnomalyKind),
}

/// The contract catalog: every event type, its versions, schemas and upcasters.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Catalog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    files: Vec<CatalogFile>,
    contracts: BTreeMap<String, EventContract>,
    typed_columns: Vec<TypedColumn>,
    upcaster: Upcaster,
}

impl Catalog {
    /// Loads every `*.yaml` / `*.yml` file of a folder (not recursive; sorted by name) and
    /// runs every static check; fails on the first error.
    pub fn load(dir: &Path) -> Result<Catalog> {
        let io = |source| Error::Io {
            path: dir.to_path_buf(),
            source,
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let path = entry.path();
            let is_yaml = matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            );
            if !is_yaml || !path.is_file() {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            files.push(CatalogFile {
                path: entry.file_name().to_string_lossy().into_owned(),
                bytes,
            });
        }
        if files.is_empty() {
            return Err(Error::Empty {
                path: dir.to_path_buf(),
            });
        }
        Catalog::from_files(files)
    }

    /// Builds the catalog from in-memory files (relative path, bytes), e.g. a plan's
    /// snapshot. Same checks as [`Catalog::load`].
    pub fn from_files(mut files: Vec<CatalogFile>) -> Result<Catalog> {
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let session = sql::planning_session();
        let mut contracts: BTreeMap<String, EventContract> = BTreeMap::new();
        for file in &files {
            let raw = raw::parse(&file.path, &file.bytes)?;
            let contract = compile_contract(&file.path, raw, &session)?;
            if let Some(other) = contracts.get(&contract.event_type) {
                return Err(Error::DuplicateEventType {
                    file: file.path.clone(),
                    other: other.file.clone(),
                    event_type: contract.event_type.clone(),
                });
            }
            contracts.insert(contract.event_type.clone(), contract);
        }
        let typed_columns = typed_columns(&contracts)?;
        let upcaster = Upcaster::new(&contracts);
        Ok(Catalog {
            inner: Arc::new(Inner {
                files,
                contracts,
                typed_columns,
                upcaster,
            }),
        })
    }

    /// The files as loaded, sorted by path.
    pub fn files(&self) -> &[CatalogFile] {
        &self.inner.files
    }

    /// Hex SHA-256 of the catalog. Encoding: for each file in path order, the path's UTF-8
    /// bytes, one `0x00` byte, the file's length as a big-endian u64, then its bytes.
    pub fn sha256(&self) -> String {
        let mut hasher = Sha256::new();
        for file in &self.inner.files {
            hasher.update(file.path.as_bytes());
            hasher.update([0u8]);
            hasher.update((file.bytes.len() as u64).to_be_bytes());
            hasher.update(&file.bytes);
        }
        hex::encode(hasher.finalize())
    }

    /// Every event type, sorted by name.
    pub fn event_types(&self) -> impl Iterator<Item = &EventContract> {
        self.inner.contracts.values()
    }

    /// One event type's contract.
    pub fn get(&self, event_type: &str) -> Option<&EventContract> {
        self.inner.contracts.get(event_type)
    }

    /// The target (newest) version of an event type.
    pub fn target_version(&self, event_type: &str) -> Option<i32> {
        self.get(event_type).map(|c| c.target().version)
    }

    /// Typed columns of the `events` table: every target schema's top-level properties,
    /// sorted by name.
    pub fn typed_columns(&self) -> &[TypedColumn] {
        &self.inner.typed_columns
    }

    /// Where a (type, version) stands.
    pub fn path(&self, event_type: &str, version: i32) -> PathStatus {
        self.inner.upcaster.path(event_type, version)
    }

    /// The batch upcaster of this catalog.
    pub fn upcaster(&self) -> &Upcaster {
        &self.inner.upcaster
    }
}

/// The static kind of each field of a payload at some point of a chain.
type Shape = BTreeMap<String, ColumnKind>;

fn shape_of(schema: &Value) -> Shape {
    schema::properties(schema)
        .map(|(name, p)| (name.clone(), ColumnKind::of_property(p)))
        .collect()
}

fn compile_contract(
    file: &str,
    raw: RawFile,
    session: &sql::SessionState,
) -> Result<EventContract> {
    let version_error = |line: u64, version: Option<i32>, message: String| Error::Version {
        file: file.to_owned(),
        line,
        version,
        message,
    };
    if raw.event_type.trim().is_empty() {
        return Err(version_error(1, None, "event_type is empty".to_owned()));
    }
    if raw.versions.is_empty() {
        return Err(version_error(1, None, "no versions".to_owned()));
    }
    let mut versions: Vec<VersionContract> = Vec::with_capacity(raw.versions.len());
    let mut raw_examples = Vec::new();
    for Spanned {
        value: rv,
        referenced: at,
        ..
    } in raw.versions
    {
        let line = at.line();
        let version = rv.version;
        if let Some(prev) = versions.last()
            && version <= prev.version
        {
            return Err(version_error(
                line,
                Some(version),
                format!(
                    "versions must be strictly increasing: version {version} follows version {}",
                    prev.version
                ),
            ));
        }
        let validator = schema::compile(&rv.schema).map_err(|message| Error::Schema {
            file: file.to_owned(),
            line,
            version,
            message,
        })?;
        let steps = match (versions.last(), rv.upcast) {
            (None, Some(_)) => {
                return Err(version_error(
                    line,
                    Some(version),
                    "the first version cannot have an upcast (there is nothing to upcast from)"
                        .to_owned(),
                ));
            }
            (None, None) => Vec::new(),
            (Some(prev), None) => {
                return Err(version_error(
                    line,
                    Some(version),
                    format!(
                        "chain with a hole: no upcast from version {} to version {version}",
                        prev.version
                    ),
                ));
            }
            (Some(prev), Some(steps)) => {
                compile_steps(file, version, &shape_of(&prev.schema), steps, session)?
            }
        };
        for (i, ex) in rv.examples.into_iter().enumerate() {
            raw_examples.push((version, i + 1, ex.referenced.line(), ex.value));
        }
        versions.push(VersionContract {
            version,
            schema: rv.schema,
            validator: Arc::new(validator),
            steps,
            examples: Vec::new(),
        });
    }
    for (version, index, line, ex) in raw_examples {
        let example_error = |message: String| Error::Example {
            file: file.to_owned(),
            line,
            version,
            example: index,
            message,
        };
        if !versions.iter().any(|v| v.version == ex.from_version) || ex.from_version > version {
            return Err(example_error(format!(
                "from_version {} is not a declared version up to {version}",
                ex.from_version
            )));
        }
        if !ex.input.is_object() || !ex.expect.is_object() {
            return Err(example_error("input and expect must be objects".to_owned()));
        }
        let holder = versions
            .iter_mut()
            .find(|v| v.version == version)
            .expect("the example's version was just compiled");
        if let Some(e) =
            schema::first_error(&holder.validator, &Lite::from_value(ex.expect.clone()))
        {
            return Err(example_error(format!(
                "expect does not validate against version {version}'s schema: {e}"
            )));
        }
        holder.examples.push(Example {
            from_version: ex.from_version,
            input: ex.input,
            expect: ex.expect,
        });
    }
    Ok(EventContract {
        event_type: raw.event_type,
        file: file.to_owned(),
        versions,
    })
}

/// Compiles a version's `upcast`, tracking the payload's shape so SQL steps can be planned.
fn compile_steps(
    file: &str,
    version: i32,
    from: &Shape,
    raw_steps: Vec<Spanned<Value>>,
    session: &sql::SessionState,
) -> Result<Vec<Arc<Step>>> {
    let mut shape = from.clone();
    let mut steps = Vec::with_capacity(raw_steps.len());
    for (
        i,
        Spanned {
            value, referenced, ..
        },
    ) in raw_steps.into_iter().enumerate()
    {
        let line = referenced.line();
        let err = |kind: &str, message: String| Error::Step {
            file: file.to_owned(),
            line,
            version,
            step: i + 1,
            kind: kind.to_owned(),
            message,
        };
        let (kind, body) = match value {
            Value::Object(map) if map.len() == 1 => map.into_iter().next().expect("one entry"),
            other => {
                return Err(err(
                    "",
                    format!(
                        "a step is a map with one key, one of {}; found {}",
                        STEP_KINDS.join(", "),
                        crate::step::describe_value(&other)
                    ),
                ));
            }
        };
        let step = match kind.as_str() {
            "rename" => {
                let pairs = string_map(&body).map_err(|m| err("rename", m))?;
                for (old, new) in &pairs {
                    if let Some(k) = shape.remove(old) {
                        shape.insert(new.clone(), k);
                    }
                }
                Step::Rename(pairs)
            }
            "default" => {
                let Value::Object(map) = body else {
                    return Err(err("default", "expected a map of field: value".to_owned()));
                };
                let pairs: Vec<(String, Value)> = map.into_iter().collect();
                for (field, value) in &pairs {
                    shape.entry(field.clone()).or_insert(kind_of_literal(value));
                }
                Step::Default(
                    pairs
                        .into_iter()
                        .map(|(field, value)| (field, Lite::from_value(value)))
                        .collect(),
                )
            }
            "drop" => {
                let fields = match &body {
                    Value::Array(items) => items
                        .iter()
                        .map(|v| v.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>(),
                    Value::String(s) => Some(vec![s.clone()]),
                    _ => None,
                }
                .ok_or_else(|| err("drop", "expected a list of field names".to_owned()))?;
                for f in &fields {
                    shape.remove(f);
                }
                Step::Drop(fields)
            }
            "cast" => {
                let pairs = string_map(&body).map_err(|m| err("cast", m))?;
                let mut casts = Vec::with_capacity(pairs.len());
                for (field, to) in pairs {
                    let to = CastTo::parse(&to).ok_or_else(|| {
                        err(
                            "cast",
                            format!(
                                "field {field}: unknown type {to}, expected integer, number, string or boolean"
                            ),
                        )
                    })?;
                    shape.insert(
                        field.clone(),
                        match to {
                            CastTo::Integer => ColumnKind::Int64,
                            CastTo::Number => ColumnKind::Float64,
                            CastTo::String => ColumnKind::Utf8,
                            CastTo::Boolean => ColumnKind::Boolean,
                        },
                    );
                    casts.push((field, to));
                }
                Step::Cast(casts)
            }
            "sql" => {
                let pairs = string_map(&body).map_err(|m| err("sql", m))?;
                if pairs.is_empty() {
                    return Err(err("sql", "no fields".to_owned()));
                }
                let (step, produced) =
                    SqlStep::compile(session, &pairs, &shape).map_err(|m| err("sql", m))?;
                shape.extend(produced);
                Step::Sql(Box::new(step))
            }
            "jq" => {
                let Value::String(code) = body else {
                    return Err(err("jq", "expected a jq program (a string)".to_owned()));
                };
                let program = JqProgram::compile(&code)
                    .map_err(|m| err("jq", m))?
                    .named(format!(
                        "{file}{}, version {version}, step {}{}",
                        crate::error::at_line(line, 0),
                        i + 1,
                        crate::error::kind_suffix("jq")
                    ));
                // The field set after jq is unknown: later SQL sees undeclared fields as Utf8.
                shape.clear();
                Step::Jq(Arc::new(program))
            }
            other => {
                return Err(err(
                    "",
                    format!(
                        "unknown step kind {other}; valid kinds: {}",
                        STEP_KINDS.join(", ")
                    ),
                ));
            }
        };
        steps.push(Arc::new(step));
    }
    Ok(steps)
}

fn string_map(body: &Value) -> Result<Vec<(String, String)>, String> {
    let Value::Object(map) = body else {
        return Err("expected a map of field: text".to_owned());
    };
    map.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            other => Err(format!(
                "field {k}: expected text, found {}",
                crate::step::describe_value(other)
            )),
        })
        .collect()
}

fn kind_of_literal(v: &Value) -> ColumnKind {
    match v {
        Value::Number(n) if n.is_f64() => ColumnKind::Float64,
        Value::Number(_) => ColumnKind::Int64,
        Value::String(_) => ColumnKind::Utf8,
        Value::Bool(_) => ColumnKind::Boolean,
        _ => ColumnKind::Json,
    }
}

fn typed_columns(contracts: &BTreeMap<String, EventContract>) -> Result<Vec<TypedColumn>> {
    // name → (type, first file, event types)
    let mut columns: BTreeMap<String, (DataType, String, Vec<String>)> = BTreeMap::new();
    for contract in contracts.values() {
        for (name, property) in schema::properties(&contract.target().schema) {
            if ENVELOPE_COLUMNS.contains(&name.as_str()) {
                return Err(Error::TypedColumn {
                    column: name.clone(),
                    message: format!(
                        "{}, version {}: property {name} of {} is named like an envelope column; rename it",
                        contract.file,
                        contract.target().version,
                        contract.event_type
                    ),
                });
            }
            let data_type = ColumnKind::of_property(property).data_type();
            match columns.get_mut(name) {
                None => {
                    columns.insert(
                        name.clone(),
                        (
                            data_type,
                            contract.file.clone(),
                            vec![contract.event_type.clone()],
                        ),
                    );
                }
                Some((existing, first_file, types)) => {
                    if *existing != data_type {
                        return Err(Error::TypedColumn {
                            column: name.clone(),
                            message: format!(
                                "{first_file} ({}) makes it {existing}, {} ({}) makes it {data_type}",
                                types[0], contract.file, contract.event_type
                            ),
                        });
                    }
                    types.push(contract.event_type.clone());
                }
            }
        }
    }
    Ok(columns
        .into_iter()
        .map(|(name, (data_type, _, mut event_types))| {
            event_types.sort();
            TypedColumn {
                name,
                data_type,
                event_types,
            }
        })
        .collect())
}

pub(crate) type Contracts = BTreeMap<String, EventContract>;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::PathBuf;

    pub(crate) fn example_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/accounts/contracts")
    }

    pub(crate) fn example_catalog() -> Catalog {
        Catalog::load(&example_dir()).expect("the example catalog loads")
    }

    fn load_one(text: &str) -> Result<Catalog> {
        Catalog::from_files(vec![CatalogFile {
            path: "bad.yaml".to_owned(),
            bytes: text.as_bytes().to_vec(),
        }])
    }

    fn err(text: &str) -> String {
        let e = load_one(text).expect_err("must not load");
        assert!(e.is_input());
        e.to_string()
    }

    const V1: &str = "event_type: T\nversions:\n  - version: 1\n    schema: {type: object, properties: {a: {type: number}}}\n";

    #[test]
    fn loads_the_example_catalog() {
        let c = example_catalog();
        let names: Vec<&str> = c.event_types().map(|e| e.event_type()).collect();
        assert_eq!(
            names,
            ["AccountClosed", "AccountOpened", "Deposited", "Withdrawn"]
        );
        assert_eq!(c.target_version("AccountOpened"), Some(3));
        assert_eq!(c.files().len(), 4);
        assert_eq!(c.sha256().len(), 64);
        assert_eq!(
            c.path("AccountOpened", 1),
            PathStatus::Upcastable { chain: vec![2, 3] }
        );
        assert_eq!(c.path("AccountOpened", 3), PathStatus::AtTarget);
        assert_eq!(
            c.path("AccountOpened", 4),
            PathStatus::Anomaly(AnomalyKind::UnknownVersion)
        );
        assert_eq!(
            c.path("AccountOpened", 0),
            PathStatus::Anomaly(AnomalyKind::NoUpcastPath)
        );
        assert_eq!(
            c.path("Nope", 1),
            PathStatus::Anomaly(AnomalyKind::UnknownType)
        );
    }

    #[test]
    fn typed_columns_of_the_example_catalog() {
        let c = example_catalog();
        let cols: Vec<(&str, &DataType)> = c
            .typed_columns()
            .iter()
            .map(|t| (t.name.as_str(), &t.data_type))
            .collect();
        use arrow::datatypes::TimeUnit;
        assert_eq!(
            cols,
            [
                ("amount_cents", &DataType::Int64),
                ("currency", &DataType::Utf8),
                ("holder", &DataType::Utf8),
                ("memo", &DataType::Utf8),
                (
                    "opened_at",
                    &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
                ),
                ("reason", &DataType::Utf8),
            ]
        );
        let currency = &c.typed_columns()[1];
        assert_eq!(
            currency.event_types,
            ["AccountOpened", "Deposited", "Withdrawn"]
        );
    }

    #[test]
    fn sha256_is_over_sorted_paths_and_bytes() {
        let f = |p: &str, b: &str| CatalogFile {
            path: p.into(),
            bytes: b.into(),
        };
        let one =
            Catalog::from_files(vec![f("b.yaml", &V1.replace("T", "B")), f("a.yaml", V1)]).unwrap();
        let two =
            Catalog::from_files(vec![f("a.yaml", V1), f("b.yaml", &V1.replace("T", "B"))]).unwrap();
        assert_eq!(one.sha256(), two.sha256());
        let mut h = Sha256::new();
        for file in two.files() {
            h.update(file.path.as_bytes());
            h.update([0]);
            h.update((file.bytes.len() as u64).to_be_bytes());
            h.update(&file.bytes);
        }
        assert_eq!(one.sha256(), hex::encode(h.finalize()));
    }

    #[test]
    fn bad_yaml_names_file_and_line() {
        let e = err("event_type: T\nversions:\n  - version: [1\n");
        assert!(e.starts_with("bad.yaml:"), "{e}");
        let e = err("event_type: T\nversions:\n  - version: 1\n    schema: {}\n    colour: red\n");
        assert!(e.starts_with("bad.yaml:5") && e.contains("colour"), "{e}");
        let e = err("event_typo: T\n");
        assert!(
            e.starts_with("bad.yaml:1") && e.contains("event_typo"),
            "{e}"
        );
    }

    #[test]
    fn unknown_step_names_file_version_and_step() {
        let e = err(&format!(
            "{V1}  - version: 2\n    schema: {{}}\n    upcast:\n      - rename: {{a: b}}\n      - frobnicate: {{a: b}}\n"
        ));
        assert!(e.starts_with("bad.yaml:9, version 2, step 2"), "{e}");
        assert!(
            e.contains("frobnicate") && e.contains("rename, default, drop, cast, sql, jq"),
            "{e}"
        );
    }

    #[test]
    fn jq_syntax_error_names_file_version_and_step() {
        let e = err(&format!(
            "{V1}  - version: 2\n    schema: {{}}\n    upcast:\n      - jq: '{{a: .b'\n"
        ));
        assert!(
            e.starts_with("bad.yaml:8, version 2, step 1 (jq): jq syntax error"),
            "{e}"
        );
    }

    #[test]
    fn hostile_jq_programs_are_refused_naming_file_version_and_step() {
        let jq = |program: &str| {
            err(&format!(
                "{V1}  - version: 2\n    schema: {{}}\n    upcast:\n      - rename: {{a: b}}\n      - jq: '{program}'\n"
            ))
        };
        for (program, message) in [
            (
                "{memo: env.AWS_SECRET_ACCESS_KEY}",
                "jq program uses `env`: jq steps get no environment (the replay must not depend on the machine)",
            ),
            (
                "$ENV.HOME",
                "jq program uses `$ENV`: jq steps get no environment (the replay must not depend on the machine)",
            ),
            (
                ". + {at: now}",
                "jq program uses `now`: jq steps get no clock (the replay must not depend on the machine)",
            ),
            ("def f: f + 1; 0 | f", "jq program defines `f` recursively"),
            ("def f: f; f", "jq program defines `f` recursively"),
        ] {
            let e = jq(program);
            assert!(
                e.starts_with(&format!("bad.yaml:9, version 2, step 2 (jq): {message}")),
                "{program}: {e}"
            );
        }
        let e = jq(&"[".repeat(300));
        assert!(
            e.starts_with("bad.yaml:9, version 2, step 2 (jq): jq syntax error"),
            "{e}"
        );
        let e = jq(&format!("{}1{}", "[".repeat(300), "]".repeat(300)));
        assert!(
            e.starts_with("bad.yaml:9, version 2, step 2 (jq): jq program nests 301 levels deep"),
            "{e}"
        );
    }

    #[test]
    fn sql_errors_name_file_version_step_and_field() {
        let e = err(&format!(
            "{V1}  - version: 2\n    schema: {{}}\n    upcast:\n      - sql: {{b: \"a +\"}}\n"
        ));
        assert!(
            e.starts_with("bad.yaml:8, version 2, step 1 (sql): field b"),
            "{e}"
        );
        let e = err(&format!(
            "{V1}  - version: 2\n    schema: {{}}\n    upcast:\n      - sql: {{b: \"sum(a)\"}}\n"
        ));
        assert!(
            e.contains("step 1 (sql): field b") && e.contains("sum"),
            "{e}"
        );
        let e = err(&format!(
            "{V1}  - version: 2\n    schema: {{}}\n    upcast:\n      - sql: {{b: \"random()\"}}\n"
        ));
        assert!(e.contains("random"), "{e}");
        for (expr, needle) in [
            (
                "repeat('x', 2000000000)",
                "repeat(…, 2000000000) would build a value of 2000000000 elements",
            ),
            (
                "lpad(CAST(a AS VARCHAR), 100000)",
                "lpad(…, 100000) would build",
            ),
            (
                "rpad(CAST(a AS VARCHAR), CAST(a AS BIGINT))",
                "the length given to rpad must be a literal integer of at most 65536",
            ),
            (
                "array_repeat(1, 1000000)",
                "array_repeat(…, 1000000) would build",
            ),
            (
                "range(1, 1000000000)",
                "function range is not allowed in a SQL step",
            ),
        ] {
            let e = err(&format!(
                "{V1}  - version: 2\n    schema: {{}}\n    upcast:\n      - sql: {{b: \"{expr}\"}}\n"
            ));
            assert!(
                e.starts_with("bad.yaml:8, version 2, step 1 (sql): field b") && e.contains(needle),
                "{expr}: {e}"
            );
        }
        // Within the bound, they load.
        let c = Catalog::from_files(vec![CatalogFile {
            path: "ok.yaml".into(),
            bytes: format!(
                "{V1}  - version: 2\n    schema: {{}}\n    upcast:\n      - sql: {{b: \"lpad(CAST(a AS VARCHAR), 12, '0')\", c: \"repeat('-', 3)\"}}\n"
            )
            .into_bytes(),
        }]);
        assert!(c.is_ok(), "{:?}", c.err());
    }

    #[test]
    fn schema_that_does_not_compile_names_file_and_version() {
        let e = err(&format!(
            "{V1}  - version: 2\n    schema: {{type: 12}}\n    upcast: []\n"
        ));
        assert!(
            e.starts_with("bad.yaml:5, version 2: schema does not compile"),
            "{e}"
        );
        let e = err(
            "event_type: T\nversions:\n  - version: 1\n    schema: {$schema: 'http://json-schema.org/draft-07/schema#'}\n",
        );
        assert!(
            e.contains("version 1: schema does not compile") && e.contains("2020-12"),
            "{e}"
        );
    }

    #[test]
    fn chain_with_a_hole_names_file_and_version() {
        let e = err(&format!("{V1}  - version: 2\n    schema: {{}}\n"));
        assert_eq!(
            e,
            "bad.yaml:5, version 2: chain with a hole: no upcast from version 1 to version 2"
        );
    }

    #[test]
    fn versions_must_increase() {
        let e = err(&format!(
            "{V1}  - version: 1\n    schema: {{}}\n    upcast: []\n"
        ));
        assert!(
            e.starts_with("bad.yaml:5, version 1: versions must be strictly increasing"),
            "{e}"
        );
    }

    #[test]
    fn duplicate_event_type_names_both_files() {
        let f = |p: &str| CatalogFile {
            path: p.into(),
            bytes: V1.into(),
        };
        let e = Catalog::from_files(vec![f("b.yaml"), f("a.yaml")])
            .unwrap_err()
            .to_string();
        assert_eq!(e, "b.yaml: event type T is already declared in a.yaml");
    }

    #[test]
    fn example_expect_must_validate() {
        let e = err(&format!(
            "{V1}    examples:\n      - from_version: 1\n        input: {{a: 1}}\n        expect: {{a: \"x\"}}\n"
        ));
        assert!(
            e.starts_with("bad.yaml:6, version 1, example 1: expect does not validate"),
            "{e}"
        );
        assert!(e.contains("at /a"), "{e}");
    }

    #[test]
    fn typed_column_conflicts_name_both_files() {
        let f = |p: &str, text: String| CatalogFile {
            path: p.into(),
            bytes: text.into_bytes(),
        };
        let other = V1
            .replace("event_type: T", "event_type: U")
            .replace("number", "string");
        let e = Catalog::from_files(vec![f("t.yaml", V1.to_owned()), f("u.yaml", other)])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("typed column a") && e.contains("t.yaml") && e.contains("u.yaml"),
            "{e}"
        );
        assert!(e.contains("Float64") && e.contains("Utf8"), "{e}");
        let e = err(&V1.replace("{a: {type: number}}", "{seq: {type: integer}}"));
        assert!(
            e.contains("typed column seq") && e.contains("bad.yaml") && e.contains("envelope"),
            "{e}"
        );
    }

    #[test]
    fn load_reads_yaml_files_only_sorted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.yml"), V1.replace("T", "B")).unwrap();
        std::fs::write(dir.path().join("a.yaml"), V1).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a contract").unwrap();
        let c = Catalog::load(dir.path()).unwrap();
        let paths: Vec<&str> = c.files().iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["a.yaml", "b.yml"]);
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            Catalog::load(empty.path()),
            Err(Error::Empty { .. })
        ));
        assert!(
            Catalog::load(&empty.path().join("missing"))
                .unwrap_err()
                .is_input()
        );
    }
}
