//! The time and memory a jq step may take on one event: `limits.step_time`, kept by a
//! watchdog thread, and [`STEP_MEMORY`], kept by the binaries' allocator ([`Metered`]).
//!
//! The iteration budget (`JQ_BUDGET`, in `jq.rs`) meters the builtins that loop
//! (`range`, `repeat`, `recurse`, `while`, `until`...), so that the same program fails the
//! same event on every machine. jaq's own traversals are not metered and jaq offers no hook
//! in them: `.[]`, `..`, `tojson`, sorting. A program can nest them into a product that runs
//! for hours on one event (`[range(1000)] as $a | [$a[] as $x | $a[] as $y | $a[]] |
//! length` yields a billion values from a thousand iterations). Such a run cannot be stopped
//! from outside, and a thread cannot be killed; so a watchdog thread looks at every jq run
//! in progress, and when one has run on one event for longer than the step time, it ends the
//! process with exit 2 and a message naming the step (file, version, step) and the setting.
//! Nothing is committed (the commit follows every shard's end), and the spill folders
//! left are swept by the next run.
//!
//! Each jq run marks its thread's slot with its start (one clock read and two atomic
//! stores; a jq step costs microseconds); the watchdog, started with the first slot, reads
//! the slots four times per step time, at most once a second.
//!
//! Memory is kept the same way, for the same reason: jaq offers no hook on the values it
//! builds, and one operation can build any size (`"abcdefgh" * 1e9`, `.[1e9] = 1`), or a
//! few can double a value over and over (`. + . | . + . | …`) without one iteration.
//! [`Metered`], the binaries' global allocator, counts what a jq run allocates on its
//! thread, net of what it frees; an allocation that would take it past [`STEP_MEMORY`]
//! ends the process with exit 2 naming the step, before it is made.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock, Weak};
use std::time::{Duration, Instant};

pub use replayfleet_config::DEFAULT_STEP_TIME;

/// The step time, milliseconds.
static BUDGET_MS: AtomicU64 = AtomicU64::new(DEFAULT_STEP_TIME.as_millis() as u64);

/// Sets the time one jq step may run on one event (`limits.step_time`), for the whole
/// process: the embedded run and each fleet worker set it from the run's plan.
pub fn set_step_time(budget: Duration) {
    let ms = u64::try_from(budget.as_millis()).unwrap_or(u64::MAX).max(1);
    BUDGET_MS.store(ms, Ordering::Relaxed);
}

/// One thread's jq run in progress, if any.
struct Slot {
    /// When the run started: milliseconds since [`epoch`] plus one; 0 when idle.
    since: AtomicU64,
    /// Which step runs (file, version, step).
    what: Mutex<Option<Arc<str>>>,
}

impl Slot {
    /// The step this slot's thread runs (or ran last), for a message.
    fn what(&self) -> String {
        let what = self.what.lock().unwrap_or_else(|e| e.into_inner());
        what.as_deref().unwrap_or("a jq step").to_owned()
    }
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
}

/// Every thread's slot; a thread that ended leaves a dead `Weak`, dropped when the next
/// thread registers.
static SLOTS: Mutex<Vec<Weak<Slot>>> = Mutex::new(Vec::new());

thread_local! {
    static SLOT: Arc<Slot> = register();
}

fn register() -> Arc<Slot> {
    start_watchdog();
    let slot = Arc::new(Slot {
        since: AtomicU64::new(0),
        what: Mutex::new(None),
    });
    let mut slots = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
    slots.retain(|s| s.strong_count() > 0);
    slots.push(Arc::downgrade(&slot));
    slot
}

/// Runs `run` (one jq step on one event) under the watchdog, as the step `what`.
pub(crate) fn watched<T>(what: &Arc<str>, run: impl FnOnce() -> T) -> T {
    SLOT.with(|slot| {
        {
            let mut current = slot.what.lock().unwrap_or_else(|e| e.into_inner());
            if !current.as_ref().is_some_and(|c| Arc::ptr_eq(c, what)) {
                *current = Some(Arc::clone(what));
            }
        }
        // The run is timed, and what it allocates counted (`Metered`), from here until
        // it returns or unwinds.
        struct Done<'a>(&'a AtomicU64);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(0, Ordering::Release);
                let _ = HELD.try_with(|held| held.set(NOT_RUNNING));
            }
        }
        slot.since.store(now_ms(), Ordering::Release);
        let _done = Done(&slot.since);
        let _ = HELD.try_with(|held| held.set(0));
        run()
    })
}

/// The most one jq step may hold on one event: what it allocates (the values it builds,
/// its output) net of what it frees. An event's payload is kilobytes; a program that
/// builds more than this is building without bound.
pub const STEP_MEMORY: i64 = 256 << 20;

/// `HELD` outside a jq run.
const NOT_RUNNING: i64 = i64::MIN;

thread_local! {
    /// Net bytes allocated by this thread's jq run in progress; [`NOT_RUNNING`] outside
    /// one. Const-initialised and without a destructor: reading it never allocates.
    static HELD: Cell<i64> = const { Cell::new(NOT_RUNNING) };
}

/// A global allocator, `A`, that counts what a jq run allocates on its thread (see the
/// module's documentation). Outside a jq run it costs one thread-local read per call.
pub struct Metered<A>(pub A);

/// Counts `bytes` (negative: freed) against the thread's jq run, if one is in progress;
/// past [`STEP_MEMORY`], reports it (which ends the process) before the allocation.
#[inline]
fn count(bytes: i64) {
    let _ = HELD.try_with(|held| {
        let before = held.get();
        if before == NOT_RUNNING {
            return;
        }
        let after = before.saturating_add(bytes);
        if after > STEP_MEMORY && bytes > 0 {
            // Counting stops first: the report allocates.
            held.set(NOT_RUNNING);
            too_much();
        } else {
            held.set(after);
        }
    });
}

#[cold]
#[inline(never)]
fn too_much() {
    let what = SLOT
        .try_with(|slot| slot.what())
        .unwrap_or_else(|_| "a jq step".to_owned());
    breach(format!(
        "the jq program of {what} built more than {} MiB for one event (the memory one jq step may hold) and cannot be stopped there, so the process ends; nothing is committed. jaq does not bound the values one operation builds (`\"ab\" * 1e9`, `.[1e9] = 1`, a doubling written out: `. + . | . + .`): bound what the program builds",
        STEP_MEMORY >> 20
    ));
}

// SAFETY: every call is passed to `A` unchanged; counting reads and writes a thread-local
// cell only (and, past the bound, reports once with counting off).
#[allow(unsafe_code)] // reason: `GlobalAlloc` is an unsafe trait; the workspace's one exception
unsafe impl<A: GlobalAlloc> GlobalAlloc for Metered<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as i64);
        // SAFETY: the caller's contract, passed on.
        unsafe { self.0.alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as i64);
        // SAFETY: the caller's contract, passed on.
        unsafe { self.0.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as i64));
        // SAFETY: the caller's contract, passed on.
        unsafe { self.0.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as i64 - layout.size() as i64);
        // SAFETY: the caller's contract, passed on.
        unsafe { self.0.realloc(ptr, layout, new_size) }
    }
}

/// What the watchdog does when a run is past the step time: by default, prints the
/// message and ends the process with exit 2 (jaq cannot stop the run).
type OnBreach = Box<dyn Fn(String) + Send + Sync>;

static ON_BREACH: OnceLock<OnBreach> = OnceLock::new();

fn breach(message: String) {
    match ON_BREACH.get() {
        Some(hook) => hook(message),
        None => {
            tracing::error!("{message}");
            eprintln!("error: {message}");
            std::process::exit(2);
        }
    }
}

fn start_watchdog() {
    static STARTED: Once = Once::new();
    STARTED.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("jq-watchdog".to_owned())
            .spawn(|| {
                loop {
                    let budget = BUDGET_MS.load(Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis((budget / 4).clamp(10, 1000)));
                    if let Some(message) = overdue(budget) {
                        breach(message);
                        return;
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start the jq watchdog ({e}): `limits.step_time` is not kept");
        }
    });
}

/// The message for the first run past `budget_ms`, if any.
fn overdue(budget_ms: u64) -> Option<String> {
    let now = now_ms();
    let slots: Vec<Arc<Slot>> = SLOTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    for slot in slots {
        let since = slot.since.load(Ordering::Acquire);
        if since == 0 || now.saturating_sub(since) <= budget_ms {
            continue;
        }
        let what = slot.what();
        // The same run still (not one that started since).
        if slot.since.load(Ordering::Acquire) != since {
            continue;
        }
        return Some(format!(
            "the jq program of {what} ran on one event for more than {} (`limits.step_time`) and cannot be stopped there, so the process ends; nothing is committed. jaq's own traversals (`.[]`, `..`, `tojson`, sorting) are not metered by the iteration budget: bound the program's nested loops over them, or raise `limits.step_time`",
            humantime::format_duration(Duration::from_millis(budget_ms))
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Each test runs in a process of its own (nextest), so the hook and the step time
    /// are this test's.
    #[test]
    fn a_run_past_the_step_time_is_reported_naming_its_step_and_a_quick_one_is_not() {
        let rx = reports();
        set_step_time(Duration::from_millis(200));
        let what: Arc<str> = Arc::from("contracts/accounts.yaml:12, version 2, step 1 (jq)");
        // Quick runs, many of them: never reported.
        for _ in 0..1000 {
            watched(&what, || std::hint::black_box(1 + 1));
        }
        std::thread::sleep(Duration::from_millis(400));
        assert!(rx.try_recv().is_err(), "a quick run was reported");
        // A run that takes a second.
        let slow: Arc<str> = Arc::from("contracts/accounts.yaml:20, version 3, step 2 (jq)");
        std::thread::spawn(move || watched(&slow, || std::thread::sleep(Duration::from_secs(2))));
        let message = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the slow run is reported");
        assert!(
            message.starts_with(
                "the jq program of contracts/accounts.yaml:20, version 3, step 2 (jq) ran on one event for more than 200ms (`limits.step_time`)"
            ),
            "{message}"
        );
    }

    /// Records reports instead of ending the process.
    fn reports() -> mpsc::Receiver<String> {
        let (tx, rx) = mpsc::channel::<String>();
        let tx = Mutex::new(tx);
        assert!(
            ON_BREACH
                .set(Box::new(move |m| {
                    let _ = tx.lock().unwrap().send(m);
                }))
                .is_ok()
        );
        rx
    }

    #[test]
    fn a_jq_step_building_past_its_memory_is_reported_before_the_allocation() {
        let rx = reports();
        let run = |code: &str| {
            let program = crate::jq::JqProgram::compile(code)
                .unwrap()
                .named("contracts/x.yaml:3, version 2, step 1 (jq)".to_owned());
            let input = crate::jq::parse_val(r#"{"a": "abcdefgh"}"#).unwrap();
            program.run(input).map(crate::jq::drop_deep)
        };
        // Well under the bound: runs, nothing reported.
        assert!(run(r#"{b: (.a * 1000)}"#).is_ok());
        assert!(run(r#"{b: ([range(100000)] | length)}"#).is_ok());
        assert!(rx.try_recv().is_err());
        // One operation: 320 MB in one string.
        let _ = run(r#"{b: (.a * 40000000)}"#);
        let message = rx.try_recv().expect("reported");
        assert!(
            message.starts_with(
                "the jq program of contracts/x.yaml:3, version 2, step 1 (jq) built more than 256 MiB for one event"
            ),
            "{message}"
        );
    }
}
