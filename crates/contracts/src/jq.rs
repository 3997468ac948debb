//! `jq` steps through jaq 3: programs compiled once at load, run per event.
//!
//! jaq works on its own value type, [`jaq_json::Val`]. jaq-json's `serde` feature only
//! deserializes `Val` (no conversion from or to `serde_json::Value`), so the conversions
//! here are written by hand, consuming their input (strings move into `Bytes` without a
//! copy, uniquely owned `Rc`s are unwrapped without a clone). The upcaster converts once
//! around a run of consecutive jq steps, and parses payload text straight into `Val` when
//! a chain starts with jq.

use std::cell::Cell;

use jaq_core::box_iter::box_once;
use jaq_core::data::HasLut;
use jaq_core::load::parse::{BinaryOp, Def, Pattern, Term};
use jaq_core::load::{Arena, File, Loader};
use jaq_core::native::{Fun, v};
use jaq_core::{Compiler, Ctx, DataT, Exn, Native, ValX, Vars};
use std::borrow::Cow;

use jaq_json::{Num, Rc, Val};
#[cfg(test)]
use serde_json::Map;
use serde_json::{Number, Value};

use crate::lite::{Lite, Obj};

/// The iterations one run of a jq program may make (per step, per event): every value
/// `range` yields and every turn of `repeat`, `recurse`, `while`, `until` and
/// `combinations` (and of what is built on them: `limit(n; repeat(f))`, `flatten`...)
/// spends one. A program that runs out fails its event (`upcast_failed`): an endless
/// `until` or `range(1e18)` cannot hang the replay. Counted, not timed, so the outcome is
/// the same on every machine.
pub(crate) const JQ_BUDGET: u64 = 1_000_000;

/// The longest jq program a step may have, in bytes; with [`COMPILE_STACK_BYTES`], the
/// room jaq's recursive lexer, parser and compiler need for the worst such program.
const MAX_PROGRAM_BYTES: usize = 16 * 1024;

/// The stack of the thread that compiles a jq program (reserved, used only as deep as
/// the program nests).
const COMPILE_STACK_BYTES: usize = 256 * 1024 * 1024;

/// The deepest a jq program's terms may nest. jaq evaluates a term by recursion, on the
/// stack of the thread that upcasts (2 MiB for the runtime's threads), once per level.
const MAX_NESTING: usize = 200;

/// Filters and variables that would make an event's upcast depend on the machine it
/// runs on (its environment, clock, time zone) or on other input than the event;
/// refused at load, with why.
const MACHINE_DEPENDENT: [(&str, &str); 7] = [
    ("env", "jq steps get no environment"),
    ("$ENV", "jq steps get no environment"),
    ("now", "jq steps get no clock"),
    (
        "localtime",
        "jq steps get no local time zone (gmtime is UTC)",
    ),
    (
        "strflocaltime",
        "jq steps get no local time zone (strftime is UTC)",
    ),
    ("input", "jq steps read their own event only"),
    ("inputs", "jq steps read their own event only"),
];

/// jaq's own definitions that loop, redefined to spend from the budget on every turn
/// (same outputs, paths and updates otherwise: `__spend` passes its input through). Each
/// replaces the definition of the same name and arity in place, so that the definitions
/// after it (`recurse/0`, `flatten`, `combinations/1`...) use it.
const METERED_DEFS: &str = r#"
def repeat(f): def rec: __spend | (f, rec); rec;
def recurse(f): def rec: __spend | (., (f | rec)); rec;
def while(cond; update): def rec: __spend | if cond then ., (update | rec) else empty end; rec;
def until(cond; update): def rec: __spend | if cond then . else update | rec end; rec;
def combinations: .[][] |= [.] | reduce .[] as $a ([]; . + $a[] | __spend);
"#;

/// jaq's data type for our programs: values are jaq-json's, and natives reach the run's
/// budget through the context.
struct Metered;

impl DataT for Metered {
    type V<'a> = Val;
    type Data<'a> = Meter<'a>;
}

/// What a run's natives see: the program and the iterations left.
#[derive(Clone)]
struct Meter<'a> {
    lut: &'a jaq_core::Lut<Metered>,
    fuel: &'a Fuel,
}

impl<'a> HasLut<'a, Metered> for Meter<'a> {
    fn lut(&self) -> &'a jaq_core::Lut<Metered> {
        self.lut
    }
}

/// The iterations left to one run, and whether it asked for more than it had.
struct Fuel {
    left: Cell<u64>,
    exhausted: Cell<bool>,
}

impl Fuel {
    /// One iteration: the value passes through, or the run halts (a halt, unlike an
    /// error, cannot be caught by `try`).
    fn spend<'a, T>(&self, x: T) -> ValX<'a, T, Val> {
        match self.left.get() {
            0 => {
                self.exhausted.set(true);
                Err(Exn::halt(0))
            }
            n => {
                self.left.set(n - 1);
                Ok(x)
            }
        }
    }
}

type Filter = jaq_core::Filter<Metered>;

/// A compiled jq program.
pub(crate) struct JqProgram {
    // jaq's compiled filter is not `Clone`; the catalog is, so share it.
    filter: std::sync::Arc<Filter>,
    /// Which step this is (file, version, step), for the watchdog's message.
    what: std::sync::Arc<str>,
}

impl std::fmt::Debug for JqProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JqProgram")
    }
}

/// `__spend`: the identity, spending one iteration (in paths and updates too).
fn spend_native() -> Fun<Metered> {
    let native = Native::<Metered>::new(|cv| {
        let fuel = cv.0.data().fuel;
        box_once(fuel.spend(cv.1))
    })
    .with_paths(|cv| {
        let fuel = cv.0.data().fuel;
        box_once(fuel.spend(cv.1))
    })
    .with_update(|cv, f| match cv.0.data().fuel.spend(()) {
        Ok(()) => f(cv.1),
        Err(e) => box_once(Err(e)),
    });
    ("__spend", v(0), native)
}

/// `range($from; $upto; $by)` as jaq's native, spending one iteration per value.
fn range_native() -> Fun<Metered> {
    let native = Native::<Metered>::new(|mut cv| {
        let by = cv.0.pop_var();
        let upto = cv.0.pop_var();
        let from = cv.0.pop_var();
        let fuel = cv.0.data().fuel;
        use std::cmp::Ordering::{Equal, Greater, Less};
        let direction = by
            .partial_cmp(&Val::Num(Num::from_integral(0)))
            .unwrap_or(Equal);
        let mut next: ValX<'_, Val> = Ok(from);
        Box::new(std::iter::from_fn(move || match next.clone() {
            Ok(x) => {
                let more = match direction {
                    Greater => x < upto,
                    Less => x > upto,
                    Equal => x != upto,
                };
                more.then(|| {
                    let after = (x + by.clone()).map_err(Exn::from);
                    std::mem::replace(&mut next, after).and_then(|x| fuel.spend(x))
                })
            }
            Err(e) => {
                // One error, then the end (as jaq's own).
                next = Ok(upto.clone());
                Some(Err(e))
            }
        }))
    });
    ("range", v(3), native)
}

/// The definitions a program sees: jaq's core, std and json ones, with the looping ones
/// metered.
fn defs() -> impl Iterator<Item = Def<&'static str>> {
    let metered: Vec<Def<&'static str>> =
        jaq_core::load::parse(METERED_DEFS, |p| p.defs()).expect("the metered definitions parse");
    let core = jaq_core::defs().map(move |d| {
        metered
            .iter()
            .find(|m| m.name == d.name && m.args.len() == d.args.len())
            .cloned()
            .unwrap_or(d)
    });
    core.chain(jaq_std::defs()).chain(jaq_json::defs())
}

/// The natives a program sees: jaq's, but for the machine-dependent ones, and with
/// `range` metered.
fn funs() -> impl Iterator<Item = Fun<Metered>> {
    jaq_core::funs()
        .chain(jaq_std::funs())
        .chain(jaq_json::funs())
        .filter(|(name, args, _)| {
            !(MACHINE_DEPENDENT.iter().any(|(n, _)| n == name)
                || (*name == "range" && args.len() == 3))
        })
        .chain([range_native(), spend_native()])
}

impl JqProgram {
    /// Parses and compiles `code` with jaq's core, std and json definitions. Refuses
    /// programs that read the machine (`env`, `$ENV`, `now`, local time, `input`) and
    /// recursive definitions.
    pub(crate) fn compile(code: &str) -> Result<JqProgram, String> {
        if code.len() > MAX_PROGRAM_BYTES {
            return Err(format!(
                "jq program is {} bytes long, more than the {MAX_PROGRAM_BYTES} a step may have",
                code.len()
            ));
        }
        // jaq's lexer, parser and compiler recurse once per level of nesting, with large
        // frames: a thread of its own with room for any program up to the size limit.
        std::thread::scope(|s| {
            let compiler = std::thread::Builder::new()
                .name("jq-compile".to_owned())
                .stack_size(COMPILE_STACK_BYTES)
                .spawn_scoped(s, || JqProgram::compile_here(code))
                .map_err(|e| format!("cannot start a thread to compile the jq program: {e}"))?;
            compiler
                .join()
                .map_err(|_| "the jq compiler failed on this program (a bug of jaq)".to_owned())?
        })
    }

    fn compile_here(code: &str) -> Result<JqProgram, String> {
        let loader = Loader::new(defs());
        let arena = Arena::default();
        let modules = loader
            .load(&arena, File { code, path: () })
            .map_err(|errs| {
                let mut messages = Vec::new();
                for (_file, err) in errs {
                    match err {
                        jaq_core::load::Error::Io(io) => {
                            messages.extend(io.into_iter().map(|(path, e)| format!("{path}: {e}")))
                        }
                        jaq_core::load::Error::Lex(lex) => messages.extend(
                            lex.into_iter()
                                .map(|(expect, at)| syntax(code, expect.as_str(), at)),
                        ),
                        jaq_core::load::Error::Parse(parse) => messages.extend(
                            parse
                                .into_iter()
                                .map(|(expect, at)| syntax(code, expect.as_str(), at)),
                        ),
                    }
                }
                format!("jq syntax error: {}", messages.join("; "))
            })?;
        scan::check(code)?;
        let filter = Compiler::default()
            .with_funs(funs())
            .compile(modules)
            .map_err(|errs| {
                let mut machine = Vec::new();
                let mut undefined = Vec::new();
                for (name, kind) in errs.into_iter().flat_map(|(_file, errs)| errs) {
                    match MACHINE_DEPENDENT.iter().find(|(n, _)| *n == name) {
                        Some((n, why)) => {
                            let message = format!(
                                "jq program uses `{n}`: {why} (the replay must not depend on the machine)"
                            );
                            if !machine.contains(&message) {
                                machine.push(message);
                            }
                        }
                        None => undefined.push(format!("undefined {} {name}", kind.as_str())),
                    }
                }
                if machine.is_empty() {
                    format!("jq compile error: {}", undefined.join("; "))
                } else {
                    machine.join("; ")
                }
            })?;
        Ok(JqProgram {
            filter: std::sync::Arc::new(filter),
            what: std::sync::Arc::from("a jq step"),
        })
    }

    /// Names the step this program is (file, version, step) for the message of a run past
    /// `limits.step_time` ([`crate::watch`]).
    pub(crate) fn named(mut self, what: String) -> JqProgram {
        self.what = std::sync::Arc::from(what);
        self
    }

    /// Runs the program on one value: exactly one output, else an error message. At most
    /// [`JQ_BUDGET`] iterations, and at most `limits.step_time` ([`crate::watch`]).
    pub(crate) fn run(&self, input: Val) -> Result<Val, String> {
        crate::watch::watched(&self.what, || self.run_with_budget(input, JQ_BUDGET))
    }

    fn run_with_budget(&self, input: Val, budget: u64) -> Result<Val, String> {
        let fuel = Fuel {
            left: Cell::new(budget),
            exhausted: Cell::new(false),
        };
        let result = self.run_metered(input, &fuel);
        if fuel.exhausted.get() {
            return Err(format!(
                "jq program ran past its budget of {budget} iterations (range, repeat, recurse, while, until...) on this event"
            ));
        }
        result
    }

    fn run_metered(&self, input: Val, fuel: &Fuel) -> Result<Val, String> {
        let meter = Meter {
            lut: &self.filter.lut,
            fuel,
        };
        let ctx = Ctx::<Metered>::new(meter, Vars::new([]));
        let mut outputs = self.filter.id.run((ctx, input));
        let first = match outputs.next() {
            None => return Err("jq program yielded no value".to_owned()),
            Some(Ok(v)) => v,
            Some(Err(e)) => return Err(exception(e)),
        };
        let error = match outputs.next() {
            None => return Ok(first),
            Some(Ok(second)) => {
                drop_deep(second);
                "jq program yielded several values".to_owned()
            }
            Some(Err(e)) => exception(e),
        };
        drop_deep(first);
        Err(error)
    }
}

/// The static checks of a program that has loaded: how deep it nests, and whether it
/// defines a filter recursively.
///
/// Nesting: jaq evaluates a term by recursion on the stack of the thread that upcasts,
/// one or more frames per level, and so do its parser and compiler (these run on a
/// thread of their own, see [`JqProgram::compile`]). A program's height counts every
/// level its evaluation may nest: a term and its parts, every element of the lists jaq
/// evaluates as nested terms (the entries of an object and the parts of a string are
/// chained `+`, the branches of `elif` nested `if`s, a path's parts nested accesses), and
/// for a call to a definition of the program, that definition's height on top of the
/// arguments'. It over-counts a little, never under-counts.
///
/// Recursion: jaq runs a recursive filter on the stack (`def f: f + 1; f` overflows it,
/// which aborts the process) or forever (a tail-recursive `def f: f; f` loops), and a
/// budget cannot stop the first; so a program that defines a filter calling itself,
/// directly or through a definition inside it or an argument it passes, is refused. In
/// jaq a definition sees only itself, the definitions around it and those before it, so
/// every cycle goes through a definition that is still open where the call is: that is
/// what is looked for. The builtins that loop (`repeat`, `recurse`, `while`, `until`,
/// `range`) stay, metered by the budget.
mod scan {
    use super::*;

    /// A name a call may resolve to, innermost last.
    enum Binding<'s> {
        /// A filter parameter of an enclosing definition (arity 0).
        Param(&'s str),
        /// A definition: `None` while its body is being read, then its body's height.
        Def {
            name: &'s str,
            arity: usize,
            height: Option<usize>,
        },
    }

    struct Scan<'s> {
        scope: Vec<Binding<'s>>,
        /// The first recursive definition found, as `name` or `name/arity`.
        found: Option<String>,
    }

    /// The height of a program (which has loaded), or why it is refused.
    pub(super) fn check(code: &str) -> Result<usize, String> {
        let Some(term) = jaq_core::load::parse(code, |p| p.term()) else {
            // It loads, so it starts with module directives; there is nothing to import.
            return Err(
                "jq steps are single programs: `module`, `import` and `include` are not supported"
                    .to_owned(),
            );
        };
        let mut scan = Scan {
            scope: Vec::new(),
            found: None,
        };
        let height = scan.term(&term);
        if let Some(name) = scan.found {
            return Err(format!(
                "jq program defines `{name}` recursively: jq steps may not recurse (a recursion without end would crash or hang the replay); use reduce, foreach, limit, until or recurse, which are bounded per event"
            ));
        }
        if height > MAX_NESTING {
            return Err(format!(
                "jq program nests {height} levels deep (counting the definitions it calls, object entries, string parts and elif branches), more than the {MAX_NESTING} a step may: jaq evaluates every level on the stack; split it into several jq steps"
            ));
        }
        Ok(height)
    }

    /// The height of a list whose element `i` jaq nests `i` levels down.
    fn chained(heights: impl Iterator<Item = usize>) -> usize {
        heights.enumerate().map(|(i, h)| i + h).max().unwrap_or(0)
    }

    impl<'s> Scan<'s> {
        /// The height a call adds beneath it: a definition of the program's body height.
        fn call(&mut self, name: &'s str, arity: usize) -> usize {
            for binding in self.scope.iter().rev() {
                match binding {
                    Binding::Param(p) if *p == name && arity == 0 => return 0,
                    Binding::Def {
                        name: n,
                        arity: a,
                        height,
                    } if *n == name && *a == arity => {
                        return match height {
                            Some(h) => *h,
                            None => {
                                if self.found.is_none() {
                                    self.found = Some(if arity == 0 {
                                        name.to_owned()
                                    } else {
                                        format!("{name}/{arity}")
                                    });
                                }
                                0
                            }
                        };
                    }
                    _ => {}
                }
            }
            // A builtin: jaq's own definitions are shallow.
            0
        }

        fn defs(&mut self, defs: &[Def<&'s str>], then: &Term<&'s str>) -> usize {
            for d in defs {
                self.scope.push(Binding::Def {
                    name: d.name,
                    arity: d.args.len(),
                    height: None,
                });
                let params: Vec<&'s str> = d
                    .args
                    .iter()
                    .copied()
                    .filter(|a| !a.starts_with('$'))
                    .collect();
                self.scope.extend(params.iter().map(|p| Binding::Param(p)));
                let body = self.term(&d.body);
                self.scope.truncate(self.scope.len() - params.len());
                if let Some(Binding::Def { height, .. }) = self.scope.last_mut() {
                    *height = Some(body);
                }
            }
            let height = self.term(then);
            self.scope.truncate(self.scope.len() - defs.len());
            height
        }

        fn pattern(&mut self, pattern: &Pattern<&'s str>) -> usize {
            1 + match pattern {
                Pattern::Var(_) => 0,
                Pattern::Arr(items) => chained(items.iter().map(|p| self.pattern(p))),
                Pattern::Obj(entries) => chained(
                    entries
                        .iter()
                        .map(|(key, p)| self.term(key).max(self.pattern(p))),
                ),
            }
        }

        fn term(&mut self, t: &Term<&'s str>) -> usize {
            use jaq_core::load::lex::StrPart;
            use jaq_core::path::Part;
            1 + match t {
                Term::Id | Term::Recurse | Term::Num(_) | Term::Var(_) | Term::Break(_) => 0,
                Term::Str(format, parts) => {
                    let format = format.map_or(0, |f| 1 + self.call(f, 0));
                    chained(parts.iter().map(|part| match part {
                        StrPart::Term(t) => self.term(t) + format,
                        StrPart::Str(_) | StrPart::Char(_) => 1,
                    }))
                }
                Term::Arr(t) => t.as_ref().map_or(0, |t| self.term(t)),
                Term::Obj(entries) => chained(entries.iter().map(|(k, v)| {
                    let v = v.as_ref().map_or(1, |v| self.term(v));
                    1 + self.term(k).max(v)
                })),
                Term::Neg(t) | Term::Label(_, t) => self.term(t),
                Term::BinOp(l, op, r) => {
                    let pattern = match op {
                        BinaryOp::Pipe(Some(pattern)) => self.pattern(pattern),
                        _ => 0,
                    };
                    self.term(l).max(pattern).max(self.term(r))
                }
                Term::Fold(_, xs, pattern, args) => {
                    let args = args.iter().map(|a| self.term(a)).max().unwrap_or(0);
                    self.term(xs).max(self.pattern(pattern)).max(args)
                }
                Term::TryCatch(t, catch) => {
                    let catch = catch.as_ref().map_or(0, |c| self.term(c));
                    self.term(t).max(catch)
                }
                Term::IfThenElse(branches, otherwise) => {
                    let heights: Vec<usize> = branches
                        .iter()
                        .map(|(cond, then)| self.term(cond).max(self.term(then)))
                        .collect();
                    let otherwise = otherwise.as_ref().map_or(0, |t| self.term(t));
                    chained(heights.into_iter().chain([otherwise]))
                }
                Term::Def(defs, then) => self.defs(defs, then),
                Term::Call(name, args) => {
                    let arity = args.len();
                    let args = args.iter().map(|a| self.term(a)).max().unwrap_or(0);
                    self.call(name, arity) + args
                }
                Term::Path(t, path) => {
                    let head = self.term(t);
                    let parts = chained(path.0.iter().map(|(part, _)| {
                        1 + match part {
                            Part::Index(i) => self.term(i),
                            Part::Range(from, upto) => from
                                .iter()
                                .chain(upto.iter())
                                .map(|t| self.term(t))
                                .max()
                                .unwrap_or(0),
                        }
                    }));
                    head.max(parts)
                }
            }
        }
    }
}

fn exception(e: jaq_core::Exn<'_, Val>) -> String {
    match e.get_err() {
        Ok(err) => format!("jq error: {err}"),
        Err(_) => "jq program halted".to_owned(),
    }
}

/// "expected X at column N, found `...`"; `at` is a slice of `code` (or empty at the end).
fn syntax(code: &str, expected: &str, at: &str) -> String {
    let offset = (at.as_ptr() as usize).wrapping_sub(code.as_ptr() as usize);
    let found: String = at.chars().take(20).collect();
    if offset <= code.len() {
        let column = code[..offset].chars().count() + 1;
        if found.is_empty() {
            format!("expected {expected} at column {column}, found end of program")
        } else {
            format!("expected {expected} at column {column}, found `{found}`")
        }
    } else {
        format!("expected {expected}, found `{found}`")
    }
}

/// Parses payload text straight into a jaq value (no `serde_json::Value` in between).
pub(crate) fn parse_val(text: &str) -> Result<Val, serde_json::Error> {
    serde_json::from_str::<Val>(text)
}

/// Moves a light JSON object into a jaq object.
pub(crate) fn obj_to_val(obj: Obj<'_>) -> Val {
    let mut map = jaq_json::Map::with_capacity_and_hasher(obj.len(), Default::default());
    for (k, v) in obj.into_members() {
        map.insert(Val::utf8_str(k.into_owned().into_bytes()), lite_to_val(v));
    }
    Val::obj(map)
}

/// Moves a light JSON value into a jaq value.
pub(crate) fn lite_to_val(value: Lite<'_>) -> Val {
    match value {
        Lite::Null => Val::Null,
        Lite::Bool(b) => Val::Bool(b),
        Lite::Num(n) => Val::Num(number_to_num(&n)),
        Lite::Str(s) => Val::utf8_str(s.into_owned().into_bytes()),
        Lite::Arr(items) => Val::Arr(Rc::new(items.into_iter().map(lite_to_val).collect())),
        Lite::Obj(obj) => obj_to_val(obj),
    }
}

fn number_to_num(n: &Number) -> Num {
    if let Some(i) = n.as_i64() {
        Num::from_integral(i)
    } else if let Some(u) = n.as_u64() {
        Num::from_integral(u)
    } else {
        Num::Float(n.as_f64().unwrap_or(f64::NAN))
    }
}

/// Moves a jaq value that must be an object into a light JSON object.
pub(crate) fn val_into_obj(val: Val) -> Result<Obj<'static>, String> {
    obj_at(val, 1)
}

/// The deepest a value a jq program yields may nest: as deep as a payload may
/// (serde_json's limit), so that nothing after the step recurses deeper.
const MAX_VALUE_DEPTH: usize = 128;

fn obj_at(val: Val, depth: usize) -> Result<Obj<'static>, String> {
    match val {
        Val::Obj(obj) => {
            let mut members = unwrap_rc(obj).into_iter();
            let mut out = Obj::with_capacity(members.len());
            while let Some((k, v)) = members.next() {
                let key = match k {
                    Val::TStr(b) | Val::BStr(b) => bytes_to_string(*b),
                    other => {
                        let kind = kind_of(&other);
                        drop_deep(other);
                        drop_deep(v);
                        members.for_each(|(k, v)| {
                            drop_deep(k);
                            drop_deep(v);
                        });
                        return Err(format!("jq program yielded an object key that is {kind}"));
                    }
                };
                match lite_at(v, depth + 1) {
                    Ok(v) => out.insert(Cow::Owned(key), v),
                    Err(e) => {
                        members.for_each(|(k, v)| {
                            drop_deep(k);
                            drop_deep(v);
                        });
                        return Err(e);
                    }
                }
            }
            Ok(out)
        }
        other => {
            let kind = kind_of(&other);
            drop_deep(other);
            Err(format!("jq program yielded {kind}, not an object"))
        }
    }
}

/// Moves a jaq value `depth` levels down into a light JSON value. Non-finite floats
/// become `null`, as jq prints them.
fn lite_at(val: Val, depth: usize) -> Result<Lite<'static>, String> {
    if depth > MAX_VALUE_DEPTH && matches!(val, Val::Arr(_) | Val::Obj(_)) {
        drop_deep(val);
        return Err(format!(
            "jq program yielded a value nested more than {MAX_VALUE_DEPTH} levels deep"
        ));
    }
    Ok(match val {
        Val::Null => Lite::Null,
        Val::Bool(b) => Lite::Bool(b),
        Val::Num(n) => match num_to_value(n) {
            Value::Number(n) => Lite::Num(n),
            _ => Lite::Null,
        },
        Val::TStr(b) | Val::BStr(b) => Lite::Str(Cow::Owned(bytes_to_string(*b))),
        Val::Arr(items) => {
            let mut items = unwrap_rc(items).into_iter();
            let mut out = Vec::with_capacity(items.len());
            while let Some(item) = items.next() {
                match lite_at(item, depth + 1) {
                    Ok(v) => out.push(v),
                    Err(e) => {
                        items.for_each(drop_deep);
                        return Err(e);
                    }
                }
            }
            Lite::Arr(out)
        }
        Val::Obj(_) => Lite::Obj(obj_at(val, depth)?),
    })
}

/// Drops a value without recursion (a jq program can nest a value far deeper than the
/// stack would allow Rust's recursive drop to go).
pub(crate) fn drop_deep(val: Val) {
    let mut stack = vec![val];
    while let Some(v) = stack.pop() {
        match v {
            Val::Arr(items) => {
                if let Ok(items) = Rc::try_unwrap(items) {
                    stack.extend(items);
                }
            }
            Val::Obj(members) => {
                if let Ok(members) = Rc::try_unwrap(members) {
                    for (k, v) in members {
                        stack.push(k);
                        stack.push(v);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Moves a JSON object into a jaq object.
#[cfg(test)]
pub(crate) fn map_to_val(map: Map<String, Value>) -> Val {
    let mut obj = jaq_json::Map::with_capacity_and_hasher(map.len(), Default::default());
    for (k, v) in map {
        obj.insert(Val::utf8_str(k.into_bytes()), value_to_val(v));
    }
    Val::obj(obj)
}

/// Moves a JSON value into a jaq value.
#[cfg(test)]
pub(crate) fn value_to_val(value: Value) -> Val {
    match value {
        Value::Null => Val::Null,
        Value::Bool(b) => Val::Bool(b),
        Value::Number(n) => Val::Num(if let Some(i) = n.as_i64() {
            Num::from_integral(i)
        } else if let Some(u) = n.as_u64() {
            Num::from_integral(u)
        } else {
            Num::Float(n.as_f64().unwrap_or(f64::NAN))
        }),
        Value::String(s) => Val::utf8_str(s.into_bytes()),
        Value::Array(items) => Val::Arr(Rc::new(items.into_iter().map(value_to_val).collect())),
        Value::Object(map) => map_to_val(map),
    }
}

#[cfg(test)]
fn obj_into_map(obj: jaq_json::Map) -> Result<Map<String, Value>, String> {
    let mut map = Map::with_capacity(obj.len());
    for (k, v) in obj {
        let key = match k {
            Val::TStr(b) | Val::BStr(b) => bytes_to_string(*b),
            other => {
                return Err(format!(
                    "jq program yielded an object key that is {}",
                    kind_of(&other)
                ));
            }
        };
        map.insert(key, val_into_value(v)?);
    }
    Ok(map)
}

/// Moves a jaq value into a JSON value. Non-finite floats become `null`, as jq prints them.
#[cfg(test)]
pub(crate) fn val_into_value(val: Val) -> Result<Value, String> {
    Ok(match val {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(b),
        Val::Num(n) => num_to_value(n),
        Val::TStr(b) | Val::BStr(b) => Value::String(bytes_to_string(*b)),
        Val::Arr(items) => Value::Array(
            unwrap_rc(items)
                .into_iter()
                .map(val_into_value)
                .collect::<Result<_, _>>()?,
        ),
        Val::Obj(obj) => Value::Object(obj_into_map(unwrap_rc(obj))?),
    })
}

fn num_to_value(n: Num) -> Value {
    match n {
        Num::Int(i) => Value::from(i as i64),
        Num::Float(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
        Num::BigInt(b) => {
            let text = b.to_string();
            text.parse::<Number>()
                .ok()
                .filter(|n| !n.is_f64())
                .map(Value::Number)
                .unwrap_or_else(|| {
                    Number::from_f64(text.parse::<f64>().unwrap_or(f64::NAN))
                        .map_or(Value::Null, Value::Number)
                })
        }
        Num::Dec(text) => text
            .parse::<Number>()
            .ok()
            .map(Value::Number)
            .unwrap_or(Value::Null),
    }
}

fn bytes_to_string(b: bytes::Bytes) -> String {
    match String::from_utf8(Vec::from(b)) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

fn unwrap_rc<T: Clone>(rc: Rc<T>) -> T {
    Rc::try_unwrap(rc).unwrap_or_else(|rc| (*rc).clone())
}

fn kind_of(v: &Val) -> &'static str {
    match v {
        Val::Null => "null",
        Val::Bool(_) => "a boolean",
        Val::Num(_) => "a number",
        Val::TStr(_) | Val::BStr(_) => "a string",
        Val::Arr(_) => "an array",
        Val::Obj(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(code: &str, input: Value) -> Result<Value, String> {
        let p = JqProgram::compile(code)?;
        p.run(value_to_val(input)).and_then(val_into_value)
    }

    #[test]
    fn runs_a_program() {
        assert_eq!(
            run("{b: (.a + 1)}", json!({"a": 1})).unwrap(),
            json!({"b": 2})
        );
        assert_eq!(
            run(". + {s: \"x\"}", json!({"a": [1.5, null, true]})).unwrap(),
            json!({"a": [1.5, null, true], "s": "x"})
        );
    }

    #[test]
    fn zero_or_several_outputs_are_errors() {
        assert!(run("empty", json!({})).unwrap_err().contains("no value"));
        assert!(run(".a, .b", json!({})).unwrap_err().contains("several"));
        assert!(
            run("error(\"boom\")", json!({}))
                .unwrap_err()
                .contains("boom")
        );
    }

    #[test]
    fn syntax_errors_name_the_place() {
        let e = JqProgram::compile("{a: .b").unwrap_err();
        assert!(e.starts_with("jq syntax error"), "{e}");
        let e = JqProgram::compile("nosuchfilter(1)").unwrap_err();
        assert!(e.contains("undefined filter nosuchfilter"), "{e}");
    }

    #[test]
    fn machine_dependent_filters_are_refused_at_load() {
        for (code, name) in [
            ("{memo: env.AWS_SECRET_ACCESS_KEY}", "env"),
            ("$ENV.HOME", "$ENV"),
            ("{at: now}", "now"),
            ("0 | localtime", "localtime"),
            (r#"0 | strflocaltime("%H")"#, "strflocaltime"),
            ("input", "input"),
            ("[inputs]", "inputs"),
            ("def f: env; 1", "env"),
        ] {
            let e = JqProgram::compile(code).unwrap_err();
            assert!(
                e.starts_with(&format!("jq program uses `{name}`: jq steps get no"))
                    || e.starts_with(&format!("jq program uses `{name}`: jq steps read")),
                "{code}: {e}"
            );
            assert!(
                e.ends_with("(the replay must not depend on the machine)"),
                "{e}"
            );
        }
        let e = JqProgram::compile("[env, now, env]").unwrap_err();
        assert_eq!(e.matches("`env`").count(), 1, "{e}");
        assert!(e.contains("`now`"), "{e}");
        // The machine-independent time filters stay, and a definition of one's own is fine.
        assert_eq!(
            run(
                r#"{t: (0 | todate), g: (0 | gmtime | mktime), s: (0 | strftime("%Y"))}"#,
                json!({})
            )
            .unwrap(),
            json!({"t": "1970-01-01T00:00:00Z", "g": 0, "s": "1970"})
        );
        assert_eq!(
            run("def env: {a: 1}; env", json!({})).unwrap(),
            json!({"a": 1})
        );
    }

    #[test]
    fn recursive_definitions_are_refused_at_load() {
        for (code, name) in [
            ("def f: f + 1; 0 | f", "f"),
            ("def f: f; f", "f"),
            ("def f(g): f(g); f(.)", "f/1"),
            ("def f($x): $x | f($x); {}", "f/1"),
            ("def f: def g: f; g; f", "f"),
            ("def app(f): f; def g: app(g); g", "g"),
            ("def f: 1; def f: f + 1; f", "f"),
            ("{a: (def f: [f]; f)}", "f"),
            ("def f: 1; def g: \"\\(g)\"; g", "g"),
            ("def g: .[g]; g", "g"),
            ("def g: reduce g as $x (0; .); g", "g"),
            ("def g: . as {(g): $x} | $x; g", "g"),
        ] {
            let e = JqProgram::compile(code).unwrap_err();
            assert!(
                e.starts_with(&format!("jq program defines `{name}` recursively")),
                "{code}: {e}"
            );
        }
        for code in [
            "def f: 1; def g: f + f; g",
            "def f(f): f; f(1)",
            "def f: def f: 1; f; f",
            "def f: 1; def g: def f: 2; f; [f, g]",
            "def map(f): [.[] | f]; map(. + 1)",
            "[recurse(if . < 3 then . + 1 else empty end)]",
        ] {
            assert!(JqProgram::compile(code).is_ok(), "{code}");
        }
        assert_eq!(
            run(
                "def f: 1; def f: 2; def g: f; def f: 3; [g, f]",
                json!(null)
            )
            .unwrap(),
            json!([2, 3])
        );
    }

    #[test]
    fn the_looping_builtins_are_metered_and_keep_their_meaning() {
        for (code, out) in [
            ("[range(5)]", json!([0, 1, 2, 3, 4])),
            (
                "[range(0, 1; 3, 4)]",
                json!([0, 1, 2, 0, 1, 2, 3, 1, 2, 1, 2, 3]),
            ),
            ("[range(5; 0; -2)]", json!([5, 3, 1])),
            ("[range(0; 1; 0.25)]", json!([0, 0.25, 0.5, 0.75])),
            ("[limit(3; repeat(1))]", json!([1, 1, 1])),
            (
                "[.a | recurse(if . < 3 then . + 1 else empty end)]",
                json!([1, 2, 3]),
            ),
            ("[0 | while(. < 3; . + 1)]", json!([0, 1, 2])),
            ("0 | until(. >= 3; . + 1)", json!(3)),
            (
                "[[1, 2], [3, 4]] | [combinations]",
                json!([[1, 3], [1, 4], [2, 3], [2, 4]]),
            ),
            (
                "[[0, 1] | combinations(2)]",
                json!([[0, 0], [0, 1], [1, 0], [1, 1]]),
            ),
            ("[[1, [2, [3]]] | flatten]", json!([[1, 2, 3]])),
            ("[{a: [1]} | paths]", json!([["a"], ["a", 0]])),
            ("[{a: [1]} | path(recurse)]", json!([[], ["a"], ["a", 0]])),
            (
                "{a: [1, {b: 2}]} | (recurse | numbers) |= . + 1",
                json!({"a": [2, {"b": 3}]}),
            ),
            ("{a: null, b: 1} | del(recurse | nulls)", json!({"b": 1})),
        ] {
            assert_eq!(run(code, json!({"a": 1})).unwrap(), out, "{code}");
        }
    }

    #[test]
    fn running_past_the_budget_fails_the_event() {
        let input = || value_to_val(json!({}));
        for code in [
            "0 | until(false; .)",
            "0 | until(. < 0; . + 1)",
            "[range(1e18)] | length",
            "last(range(1e18))",
            "[limit(1e18; repeat(1))] | length",
            "[0 | recurse(. + 1)] | length",
            "last(0 | while(true; .))",
            "[[range(100)] | combinations(5)] | length",
            "try (0 | until(false; .)) catch 1",
            "first(0 | until(false; .)) // 1",
            "reduce range(200) as $i (0; reduce range(200) as $j (.; . + 1))",
        ] {
            let p = JqProgram::compile(code).unwrap();
            let e = p.run_with_budget(input(), 10_000).unwrap_err();
            assert!(
                e.starts_with("jq program ran past its budget of 10000 iterations"),
                "{code}: {e}"
            );
        }
        let p = JqProgram::compile("{n: [range(.n)] | length}").unwrap();
        let n = |n: u64| value_to_val(json!({ "n": n }));
        assert_eq!(
            val_into_value(p.run_with_budget(n(10_000), 10_000).unwrap()).unwrap(),
            json!({"n": 10_000})
        );
        assert!(p.run_with_budget(n(10_001), 10_000).is_err());
        // The real budget, and a fresh one for every run.
        let e = p.run(n(JQ_BUDGET + 1)).unwrap_err();
        assert!(e.contains("budget of 1000000 iterations"), "{e}");
        assert!(p.run(n(3)).is_ok());
    }

    /// Hostile programs of every shape that nests: `(prefix, middle, suffix)` repeated.
    const NESTERS: [(&str, &str, &str); 12] = [
        ("[", "1", "]"),
        ("(", "1", ")"),
        ("-", "1", ""),
        ("1 as $x | ", ".", ""),
        ("if true then ", "1", " end"),
        ("def f: ", "1", "; f"),
        ("try ", "1", ""),
        ("\"\\(", "1", ")\""),
        ("{a: ", "1", "}"),
        ("1 | ", "1", ""),
        ("reduce . as $x (", "1", "; .)"),
        ("1 + ", "1", ""),
    ];

    fn nested((prefix, middle, suffix): (&str, &str, &str), levels: usize) -> String {
        format!("{}{middle}{}", prefix.repeat(levels), suffix.repeat(levels))
    }

    #[test]
    fn deep_or_long_programs_are_refused_at_load() {
        for nester in NESTERS {
            // As deep as the size limit allows: refused for its nesting, without a crash.
            let per_level = nester.0.len() + nester.2.len();
            let code = nested(nester, (MAX_PROGRAM_BYTES - 8) / per_level);
            assert!(code.len() <= MAX_PROGRAM_BYTES);
            if nester.0 == "(" {
                // Parentheses only group: they nest in the parser, not in the program.
                let p = JqProgram::compile(&code).unwrap();
                assert_eq!(val_into_value(p.run(Val::Null).unwrap()).unwrap(), json!(1));
                continue;
            }
            let e = JqProgram::compile(&code).unwrap_err();
            assert!(
                e.starts_with("jq program nests ") && e.contains("more than the 200"),
                "{}: {e}",
                nester.0
            );
        }
        for code in [
            format!("\"{}\"", "\\n".repeat(300)),
            format!(
                "if false then 0 {}else 1 end",
                "elif false then 0 ".repeat(300)
            ),
            format!(
                "{{{}}}",
                (0..300)
                    .map(|i| format!("a{i}: 1"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            format!("def f: {}; [[[[[[f]]]]]]", nested(NESTERS[0], 196)),
            format!("{{}}{}", ".a".repeat(300)),
        ] {
            let e = JqProgram::compile(&code).unwrap_err();
            assert!(e.starts_with("jq program nests "), "{e}");
        }
        let e = JqProgram::compile(&" ".repeat(MAX_PROGRAM_BYTES + 1)).unwrap_err();
        assert_eq!(
            e,
            "jq program is 16385 bytes long, more than the 16384 a step may have"
        );
    }

    #[test]
    fn programs_at_the_nesting_limit_run_on_a_small_stack() {
        // Each shape as deep as the limit lets it (some count two levels a turn: a nested
        // `def`, its body and the call; an object, itself and its entry).
        let deepest = |make: &dyn Fn(usize) -> String| {
            let levels = (1..=200)
                .rev()
                .find(|n| JqProgram::compile(&make(*n)).is_ok())
                .unwrap();
            assert!(levels >= 95, "{}", make(1));
            JqProgram::compile(&make(levels)).unwrap()
        };
        let mut compiled: Vec<JqProgram> = NESTERS
            .iter()
            .map(|n| deepest(&|levels| nested(*n, levels)))
            .collect();
        compiled.push(deepest(&|levels| {
            format!("def f: {}; [f]", nested(NESTERS[3], levels))
        }));
        compiled.push(deepest(&|levels| {
            format!(
                "if false then 0 {}else 1 end",
                "elif false then 0 ".repeat(levels)
            )
        }));
        // The runtime's threads have 2 MiB stacks.
        std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(move || {
                for p in compiled {
                    let _ = p.run(value_to_val(json!({})));
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn deep_values_from_jq_fail_the_event() {
        let p = JqProgram::compile("{a: reduce range(100000) as $i (0; [.])}").unwrap();
        let out = p.run(value_to_val(json!({}))).unwrap();
        let e = val_into_obj(out).unwrap_err();
        assert_eq!(
            e,
            "jq program yielded a value nested more than 128 levels deep"
        );
        let p = JqProgram::compile("reduce range(100000) as $i (0; [.])").unwrap();
        let out = p.run(value_to_val(json!({}))).unwrap();
        assert_eq!(
            val_into_obj(out).unwrap_err(),
            "jq program yielded an array, not an object"
        );
        let p = JqProgram::compile("reduce range(100000) as $i (0; [.]) | ., .").unwrap();
        assert!(
            p.run(value_to_val(json!({})))
                .unwrap_err()
                .contains("several")
        );
        let shallow = JqProgram::compile("{a: reduce range(127) as $i (0; [.])}").unwrap();
        assert!(val_into_obj(shallow.run(value_to_val(json!({}))).unwrap()).is_ok());
    }

    #[test]
    fn round_trips_values() {
        let v = json!({"a": {"b": [1, -2, 2.5, "s", null, false]}, "big": 18446744073709551615u64});
        let back = val_into_value(value_to_val(v.clone())).unwrap();
        assert_eq!(back, v);
        let parsed = parse_val(&v.to_string()).unwrap();
        assert_eq!(val_into_value(parsed).unwrap(), v);
    }
}
