//! Phase two: the events of one partition, made up in `seq` order.
//!
//! Each stream lives a bank account's life: `AccountOpened` first, then deposits and
//! withdrawals, and for about a fifth of the streams with three events or more an
//! `AccountClosed` as the very last event. The balance is tracked in integer cents
//! and a withdrawal never exceeds it, so `balance_cents >= 0` holds after every
//! valid event. Edge-case events (unknown types, invalid payloads, future versions,
//! conflicting copies) never move a balance: a replay that quarantines or drops them
//! sees the same balances as one that never saw them.
//!
//! Contract versions follow time: the first third of the `seq` range writes version 1
//! of everything, the rest version 2, and `AccountOpened` version 3 in the last third.
//! Accounts opened in the first third are EUR accounts (version 1 deposits carry no
//! currency and are upcast to EUR); later ones are EUR, USD or GBP.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Value, json};

use crate::{
    EdgeCaseCounts, EdgeCases, GenerateSpec, LONG_STRING_CHARS, ids,
    schedule::{Slot, SlotKind},
};

/// Share of streams (with at least three events) that end with `AccountClosed`.
const CLOSE_SHARE: f64 = 0.2;
/// About three years of history, whatever the number of events.
const HISTORY_SPAN_US: i64 = 3 * 365 * 86_400 * 1_000_000;

/// One archive row, ready to encode.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row {
    pub event_id: String,
    pub stream: u32,
    pub seq: u64,
    pub event_type: &'static str,
    pub version: i32,
    pub occurred_at_us: i64,
    pub payload: String,
    pub metadata: Option<String>,
}

/// Where a stream stands; streams never share a partition, so one vector indexed by
/// stream serves every partition in turn.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StreamState {
    seen: u32,
    balance_cents: i64,
    currency: &'static str,
    closes: bool,
}

/// `occurred_at` as a pure function of `seq`: strictly increasing, random-looking steps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    start_us: i64,
    step_us: i64,
    seed: u64,
}

impl Clock {
    pub(crate) fn new(start: DateTime<Utc>, last_seq: u64, seed: u64) -> Self {
        let step_us = (HISTORY_SPAN_US / last_seq.max(1) as i64).max(1_000);
        Self {
            start_us: start.timestamp_micros(),
            step_us,
            seed,
        }
    }

    /// `start + (seq - 1) * step + jitter` with `jitter < step`: consecutive values
    /// differ by between 1 and `2 * step - 1` microseconds.
    pub(crate) fn at(&self, seq: u64) -> i64 {
        let jitter = (ids::splitmix64(self.seed ^ seq) % self.step_us as u64) as i64;
        self.start_us
            .saturating_add((seq as i64 - 1).saturating_mul(self.step_us))
            .saturating_add(jitter)
    }
}

/// What phase two counts on its way.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub edge: EdgeCaseCounts,
    pub versions: BTreeMap<(&'static str, i32), u64>,
    pub streams: u64,
    pub closed_streams: u64,
}

/// An original kept until its resend is written (resends stay inside their partition).
#[derive(Debug)]
struct Stashed {
    event_id: String,
    stream: u32,
    event_type: &'static str,
    version: i32,
    occurred_at_us: i64,
    payload: Map<String, Value>,
    correlation_id: String,
    producer: &'static str,
}

/// Whether an event counts as a valid, catalogued one (only those get the
/// validity-preserving edge cases).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Valid,
    Anomalous,
}

struct Event {
    event_type: &'static str,
    version: i32,
    payload: Map<String, Value>,
    class: Class,
}

/// The history of one partition, one row at a time.
pub(crate) struct PartitionHistory<'a> {
    edge: EdgeCases,
    clock: Clock,
    last_seq: u64,
    rng: ChaCha8Rng,
    stream_events: &'a [u32],
    streams: &'a mut [StreamState],
    stash: BTreeMap<u32, Stashed>,
    tally: &'a mut Tally,
    long_string: &'a str,
}

impl<'a> PartitionHistory<'a> {
    #[allow(clippy::too_many_arguments)] // reason: private constructor wiring shared state
    pub(crate) fn new(
        spec: &GenerateSpec,
        partition: u32,
        clock: Clock,
        last_seq: u64,
        stream_events: &'a [u32],
        streams: &'a mut [StreamState],
        tally: &'a mut Tally,
        long_string: &'a str,
    ) -> Self {
        // The schedule uses ChaCha stream 0; each partition its own stream, so a
        // partition's events do not depend on how many rows other partitions have.
        let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
        rng.set_stream(u64::from(partition) + 1);
        Self {
            edge: spec.edge,
            clock,
            last_seq,
            rng,
            stream_events,
            streams,
            stash: BTreeMap::new(),
            tally,
            long_string,
        }
    }

    /// The row for `slot`, the `index`-th row of this partition.
    pub(crate) fn row(&mut self, index: u32, slot: &Slot) -> Row {
        let row = match slot.kind {
            SlotKind::Original { resent } => self.original(index, slot, resent),
            SlotKind::Duplicate => self.resend(slot, false),
            SlotKind::Conflicting => self.resend(slot, true),
        };
        *self
            .tally
            .versions
            .entry((row.event_type, row.version))
            .or_default() += 1;
        row
    }

    /// Swaps a few rows of a segment with a close neighbour (`out_of_order`).
    pub(crate) fn disorder(&mut self, rows: &mut [Row]) {
        let rate = self.edge.out_of_order;
        if rate <= 0.0 || rows.len() < 2 {
            return;
        }
        for i in 0..rows.len() - 1 {
            if self.rng.random_bool(rate) {
                let j = (i + self.rng.random_range(1..=3)).min(rows.len() - 1);
                rows.swap(i, j);
                self.tally.edge.out_of_order += 1;
            }
        }
    }

    fn chance(&mut self, rate: f64) -> bool {
        rate > 0.0 && self.rng.random_bool(rate)
    }

    fn original(&mut self, index: u32, slot: &Slot, resent: bool) -> Row {
        let stream = slot.target;
        let occurred_at_us = self.clock.at(slot.seq);
        let era = era(slot.seq, self.last_seq);
        let total = self.stream_events[stream as usize];
        let mut state = self.streams[stream as usize];
        let nth = state.seen;
        state.seen += 1;
        let mut event = if nth == 0 {
            state.currency = if era == 0 {
                "EUR"
            } else {
                currency(&mut self.rng)
            };
            state.closes = total >= 3 && self.rng.random_bool(CLOSE_SHARE);
            self.tally.streams += 1;
            self.opened(era, state.currency, occurred_at_us)
        } else if state.closes && nth + 1 == total {
            self.tally.closed_streams += 1;
            self.closed()
        } else {
            self.middle(era, &mut state)
        };
        self.streams[stream as usize] = state;

        if event.class == Class::Valid && self.chance(self.edge.unknown_fields) {
            let legacy = format!("legacy-{:04x}", self.rng.random::<u16>());
            event.payload.insert("x_legacy_field".into(), legacy.into());
            self.tally.edge.unknown_fields += 1;
        }
        let event_id = ids::event_id(&mut self.rng);
        let correlation_id = format!("{:016x}", self.rng.random::<u64>());
        let producer = producer(era);
        let metadata = if self.chance(self.edge.nulls) {
            self.tally.edge.nulls += 1;
            if self.rng.random_bool(0.5) {
                None
            } else {
                Some(json!({"correlation_id": null, "producer": producer}).to_string())
            }
        } else {
            Some(json!({"correlation_id": correlation_id, "producer": producer}).to_string())
        };
        let payload = serde_json::to_string(&event.payload).expect("JSON values serialize");
        let row = Row {
            event_id,
            stream,
            seq: slot.seq,
            event_type: event.event_type,
            version: event.version,
            occurred_at_us,
            payload,
            metadata,
        };
        if resent {
            self.stash.insert(
                index,
                Stashed {
                    event_id: row.event_id.clone(),
                    stream,
                    event_type: row.event_type,
                    version: row.version,
                    occurred_at_us,
                    payload: event.payload,
                    correlation_id,
                    producer,
                },
            );
        }
        row
    }

    /// A later copy of a stashed original: same id, type, version, payload and
    /// occurrence time; a new `seq`; `"resent": true` in the metadata.
    fn resend(&mut self, slot: &Slot, conflicting: bool) -> Row {
        let original = self
            .stash
            .remove(&slot.target)
            .expect("the schedule resends only stashed originals, once");
        let mut payload = original.payload;
        if conflicting {
            payload.insert("memo".into(), "amended".into());
            self.tally.edge.conflicting_duplicates += 1;
        } else {
            self.tally.edge.duplicates += 1;
        }
        let metadata = json!({
            "correlation_id": original.correlation_id,
            "producer": original.producer,
            "resent": true,
        });
        Row {
            event_id: original.event_id,
            stream: original.stream,
            seq: slot.seq,
            event_type: original.event_type,
            version: original.version,
            occurred_at_us: original.occurred_at_us,
            payload: Value::Object(payload).to_string(),
            metadata: Some(metadata.to_string()),
        }
    }

    fn opened(&mut self, era: u8, currency: &'static str, occurred_at_us: i64) -> Event {
        let name = holder_name(&mut self.rng);
        let mut payload = Map::new();
        let version = i32::from(era) + 1;
        match era {
            0 => {
                payload.insert("owner".into(), name.into());
                if self.rng.random_bool(0.7) {
                    payload.insert("currency".into(), currency.into());
                }
            }
            1 => {
                payload.insert("owner_name".into(), name.into());
                payload.insert("currency".into(), currency.into());
            }
            _ => {
                let kind = if is_company(&name) {
                    "company"
                } else {
                    "person"
                };
                payload.insert("holder".into(), json!({"name": name, "kind": kind}));
                payload.insert("currency".into(), currency.into());
            }
        }
        if era > 0 && self.rng.random_bool(0.8) {
            payload.insert("opened_at".into(), rfc3339(occurred_at_us).into());
        }
        valid("AccountOpened", version, payload)
    }

    fn closed(&mut self) -> Event {
        let reason = match self.rng.random_range(0..20) {
            0 => "fraud",
            1..=5 => "dormant",
            _ => "customer_request",
        };
        let mut payload = Map::new();
        payload.insert("reason".into(), reason.into());
        valid("AccountClosed", 1, payload)
    }

    fn middle(&mut self, era: u8, state: &mut StreamState) -> Event {
        let edge = self.edge;
        let anomalous = edge.unknown_types + edge.invalid_payloads + edge.future_versions;
        let roll: f64 = if anomalous > 0.0 {
            self.rng.random()
        } else {
            1.0
        };
        if roll < edge.unknown_types {
            return self.unknown_type();
        }
        if roll < edge.unknown_types + edge.invalid_payloads {
            return self.invalid(era, state.currency);
        }
        if roll < anomalous {
            return self.future_version(state.currency);
        }

        let version = if era == 0 { 1 } else { 2 };
        let cents = amount_cents(&mut self.rng);
        let deposit = state.balance_cents == 0 || self.rng.random_bool(0.55);
        let memo = if self.chance(edge.long_strings) {
            self.tally.edge.long_strings += 1;
            Some(self.long_string.to_owned())
        } else if self.rng.random_bool(0.25) {
            Some(memo(&mut self.rng))
        } else {
            None
        };
        let mut payload = if deposit {
            state.balance_cents += cents;
            money(version, cents, state.currency, true, &mut self.rng)
        } else {
            let cents = cents.min(state.balance_cents);
            state.balance_cents -= cents;
            money(version, cents, state.currency, false, &mut self.rng)
        };
        if let Some(memo) = memo {
            payload.insert("memo".into(), memo.into());
        }
        valid(money_type(deposit), version, payload)
    }

    fn unknown_type(&mut self) -> Event {
        self.tally.edge.unknown_types += 1;
        let mut payload = Map::new();
        let event_type = if self.rng.random_bool(0.5) {
            payload.insert("points".into(), self.rng.random_range(1..=500).into());
            let program = if self.rng.random_bool(0.3) {
                "gold"
            } else {
                "silver"
            };
            payload.insert("program".into(), program.into());
            "LoyaltyPointsAwarded"
        } else {
            let cities = [
                ("Berlin", "DE"),
                ("Lyon", "FR"),
                ("Leeds", "GB"),
                ("Austin", "US"),
            ];
            let (city, country) = cities[self.rng.random_range(0..cities.len())];
            payload.insert("city".into(), city.into());
            payload.insert("country".into(), country.into());
            "AddressChanged"
        };
        Event {
            event_type,
            version: 1,
            payload,
            class: Class::Anomalous,
        }
    }

    /// A deposit or withdrawal that fails its version's schema, in one of five ways.
    fn invalid(&mut self, era: u8, currency: &'static str) -> Event {
        self.tally.edge.invalid_payloads += 1;
        let version = if era == 0 { 1 } else { 2 };
        let deposit = self.rng.random_bool(0.5);
        let cents = amount_cents(&mut self.rng);
        let mut payload = money(version, cents, currency, deposit, &mut self.rng);
        let key = match (deposit, version) {
            (true, 1) => "amount",
            (false, 1) => "amt",
            _ => "amount_cents",
        };
        let broken: Option<Value> = match self.rng.random_range(0..5) {
            // a wrong type
            0 => Some(match (deposit, version) {
                (true, 1) => format!("{}.{:02}", cents / 100, cents % 100).into(),
                (false, 1) => (cents as f64 / 100.0).into(),
                _ => cents.to_string().into(),
            }),
            // a required field missing
            1 => None,
            // a required field null
            2 => Some(Value::Null),
            // an optional field explicitly null: no schema of the catalog admits a null
            3 => {
                payload.insert("memo".into(), Value::Null);
                payload.get(key).cloned()
            }
            // a broken constraint (or a nested value where a number belongs)
            _ => match (deposit, version) {
                (true, 1) => Some(json!({"value": cents, "unit": "cents"})),
                (false, 1) => Some(format!("{},{:02}", cents / 100, cents % 100).into()),
                _ if self.rng.random_bool(0.5) => Some((-cents).into()),
                _ => {
                    payload.insert("currency".into(), format!("{currency}O").into());
                    payload.get(key).cloned()
                }
            },
        };
        match broken {
            Some(value) => payload.insert(key.into(), value),
            None => payload.remove(key),
        };
        Event {
            event_type: money_type(deposit),
            version,
            payload,
            class: Class::Anomalous,
        }
    }

    /// A deposit or withdrawal of version 3, which the catalog does not know yet.
    fn future_version(&mut self, currency: &'static str) -> Event {
        self.tally.edge.future_versions += 1;
        let deposit = self.rng.random_bool(0.5);
        let cents = amount_cents(&mut self.rng);
        let channels = ["card", "sepa", "atm"];
        let channel = channels[self.rng.random_range(0..channels.len())];
        let mut payload = Map::new();
        payload.insert("amount_cents".into(), cents.into());
        payload.insert("currency".into(), currency.into());
        payload.insert("channel".into(), channel.into());
        Event {
            event_type: money_type(deposit),
            version: 3,
            payload,
            class: Class::Anomalous,
        }
    }
}

fn valid(event_type: &'static str, version: i32, payload: Map<String, Value>) -> Event {
    Event {
        event_type,
        version,
        payload,
        class: Class::Valid,
    }
}

fn money_type(deposit: bool) -> &'static str {
    if deposit { "Deposited" } else { "Withdrawn" }
}

/// The valid payload of a deposit or withdrawal of `cents`.
fn money(
    version: i32,
    cents: i64,
    currency: &'static str,
    deposit: bool,
    rng: &mut impl Rng,
) -> Map<String, Value> {
    let mut payload = Map::new();
    match (deposit, version) {
        // Exactly representable enough: round(cents / 100.0 * 100) == cents.
        (true, 1) => {
            payload.insert("amount".into(), (cents as f64 / 100.0).into());
        }
        (false, 1) => {
            payload.insert("amt".into(), decimal(cents, rng).into());
        }
        _ => {
            payload.insert("amount_cents".into(), cents.into());
            payload.insert("currency".into(), currency.into());
        }
    }
    payload
}

/// Cents as a decimal string matching `^[0-9]+(\.[0-9]{1,2})?$`, written the way
/// people do: "12", "12.5" or "12.50".
fn decimal(cents: i64, rng: &mut impl Rng) -> String {
    let (units, fraction) = (cents / 100, cents % 100);
    if fraction == 0 && rng.random_bool(0.5) {
        units.to_string()
    } else if fraction % 10 == 0 && rng.random_bool(0.5) {
        format!("{units}.{}", fraction / 10)
    } else {
        format!("{units}.{fraction:02}")
    }
}

/// Mostly small amounts, some large ones, a third of them round.
fn amount_cents(rng: &mut impl Rng) -> i64 {
    let cents: i64 = match rng.random_range(0..10) {
        0..=5 => rng.random_range(1..=10_000),
        6..=8 => rng.random_range(10_000..=100_000),
        _ => rng.random_range(100_000..=1_000_000),
    };
    if rng.random_bool(0.3) {
        (cents / 100).max(1) * 100
    } else {
        cents
    }
}

fn currency(rng: &mut impl Rng) -> &'static str {
    match rng.random_range(0..10) {
        0..=4 => "EUR",
        5..=7 => "USD",
        _ => "GBP",
    }
}

fn memo(rng: &mut impl Rng) -> String {
    const MEMOS: [&str; 8] = [
        "salary",
        "rent",
        "coffee",
        "groceries",
        "atm",
        "transfer",
        "refund",
        "utilities",
    ];
    if rng.random_bool(0.2) {
        format!("invoice {}", rng.random_range(1000..10_000))
    } else {
        MEMOS[rng.random_range(0..MEMOS.len())].to_owned()
    }
}

const COMPANY_SUFFIXES: [&str; 3] = [" Ltd", " GmbH", " Inc"];

/// Persons mostly, companies sometimes; a company name ends in " Ltd", " GmbH" or
/// " Inc", which is what the catalog's version-3 upcaster tests for.
fn holder_name(rng: &mut impl Rng) -> String {
    const FIRST: [&str; 12] = [
        "Ada",
        "Grace",
        "Alan",
        "Katherine",
        "Edsger",
        "Barbara",
        "Donald",
        "Frances",
        "Radia",
        "Ken",
        "Hedy",
        "Margaret",
    ];
    const LAST: [&str; 12] = [
        "Lovelace", "Hopper", "Turing", "Johnson", "Dijkstra", "Liskov", "Knuth", "Allen",
        "Perlman", "Thompson", "Lamarr", "Hamilton",
    ];
    const COMPANIES: [&str; 8] = [
        "Acme",
        "Globex",
        "Initech",
        "Umbrella",
        "Hooli",
        "Vandelay",
        "Tyrell",
        "Cyberdyne",
    ];
    if rng.random_bool(0.15) {
        let company = COMPANIES[rng.random_range(0..COMPANIES.len())];
        let suffix = COMPANY_SUFFIXES[rng.random_range(0..COMPANY_SUFFIXES.len())];
        format!("{company}{suffix}")
    } else {
        let first = FIRST[rng.random_range(0..FIRST.len())];
        let last = LAST[rng.random_range(0..LAST.len())];
        format!("{first} {last}")
    }
}

fn is_company(name: &str) -> bool {
    COMPANY_SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// 0, 1 or 2: which third of the `seq` range `seq` falls in.
fn era(seq: u64, last_seq: u64) -> u8 {
    ((u128::from(seq - 1) * 3 / u128::from(last_seq.max(1))) as u8).min(2)
}

/// The producer release that was live in an era.
fn producer(era: u8) -> &'static str {
    match era {
        0 => "ledger-svc@1.2.0",
        1 => "ledger-svc@1.4.2",
        _ => "ledger-svc@2.0.1",
    }
}

fn rfc3339(us: i64) -> String {
    DateTime::from_timestamp_micros(us)
        .expect("generated times are in range")
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The 100 KiB memo of the `long_strings` edge case: ASCII, so chars equal bytes.
pub(crate) fn long_string() -> String {
    "The quick brown fox jumps over the lazy dog; "
        .chars()
        .cycle()
        .take(LONG_STRING_CHARS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_strictly_increases() {
        let clock = Clock::new(crate::spec::default_start_time(), 1_000, 3);
        let times: Vec<i64> = (1..=1_000).map(|s| clock.at(s)).collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]));
        assert!(times[0] >= crate::spec::default_start_time().timestamp_micros());
    }

    #[test]
    fn decimals_match_the_withdrawn_v1_pattern_and_round_trip() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for cents in [1, 10, 99, 100, 150, 1234, 100_000, 999_999] {
            for _ in 0..8 {
                let d = decimal(cents, &mut rng);
                let (units, fraction) = d.split_once('.').unwrap_or((&d, ""));
                assert!(units.chars().all(|c| c.is_ascii_digit()) && !units.is_empty());
                assert!(fraction.len() <= 2 && fraction.chars().all(|c| c.is_ascii_digit()));
                let parsed: f64 = d.parse().unwrap();
                assert_eq!((parsed * 100.0).round() as i64, cents, "{d}");
            }
        }
    }

    #[test]
    fn float_amounts_round_trip_through_cents() {
        for cents in (1..=1_000_000).step_by(7) {
            assert_eq!(((cents as f64 / 100.0) * 100.0).round() as i64, cents);
        }
    }

    #[test]
    fn eras_split_the_seq_range_in_thirds() {
        assert_eq!(era(1, 9), 0);
        assert_eq!(era(3, 9), 0);
        assert_eq!(era(4, 9), 1);
        assert_eq!(era(7, 9), 2);
        assert_eq!(era(9, 9), 2);
        assert_eq!(era(1, 1), 0);
    }

    #[test]
    fn long_string_is_100_kib() {
        assert_eq!(long_string().chars().count(), 100 * 1024);
    }

    #[test]
    fn company_names_are_the_ones_the_upcaster_recognises() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for _ in 0..200 {
            let name = holder_name(&mut rng);
            let jq_says_company = ["Ltd", "GmbH", "Inc"]
                .iter()
                .any(|s| name.ends_with(&format!(" {s}")));
            assert_eq!(is_company(&name), jq_says_company);
        }
    }
}
