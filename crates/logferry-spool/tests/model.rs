//! Model-based property test: any sequence of append / read / ack / flush /
//! crash / close+reopen keeps the at-least-once contract:
//!
//! * every appended and unacknowledged record is readable after reopen, in
//!   id order, with its exact payload;
//! * no record below the watermark checkpointed by the last `flush`/`close`
//!   ever reappears;
//! * within one process lifetime the reader returns each record once.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use logferry_spool::{FsyncPolicy, Spool, SpoolConfig};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<usize>),
    Read(usize),
    Ack(usize),
    AckAll,
    Flush,
    Crash,
    CloseReopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => proptest::collection::vec(0usize..120, 1..8).prop_map(Op::Append),
        3 => (1usize..20).prop_map(Op::Read),
        3 => any::<usize>().prop_map(Op::Ack),
        1 => Just(Op::AckAll),
        1 => Just(Op::Flush),
        1 => Just(Op::Crash),
        1 => Just(Op::CloseReopen),
    ]
}

fn cfg(tail: bool) -> SpoolConfig {
    SpoolConfig {
        segment_bytes: 300,
        memory_tail_bytes: if tail { 1024 } else { 0 },
        fsync: FsyncPolicy::Interval(Duration::from_millis(3)),
        checkpoint_interval: Duration::from_millis(3),
        ..SpoolConfig::default()
    }
}

struct Model {
    payloads: BTreeMap<u64, Vec<u8>>,
    acked: BTreeSet<u64>,
    in_flight: Vec<u64>,
    last_read: u64,
    floor: u64,
}

impl Model {
    fn watermark(&self) -> u64 {
        self.payloads
            .keys()
            .find(|id| !self.acked.contains(id))
            .copied()
            .unwrap_or_else(|| self.payloads.keys().next_back().map_or(1, |l| l + 1))
    }
}

/// Checks the state right after a reopen, then rewinds the reader.
fn check_reopened(s: &Spool, m: &mut Model) -> Result<(), TestCaseError> {
    let got = drain(s);
    let mut prev = 0;
    for r in &got {
        prop_assert!(r.id > prev, "ids out of order");
        prev = r.id;
        prop_assert!(
            r.id >= m.floor,
            "id {} below checkpointed {}",
            r.id,
            m.floor
        );
        let want = m.payloads.get(&r.id);
        prop_assert_eq!(Some(&r.payload.to_vec()), want, "payload of {}", r.id);
    }
    let ids: BTreeSet<u64> = got.iter().map(|r| r.id).collect();
    for id in m.payloads.keys() {
        if !m.acked.contains(id) {
            prop_assert!(ids.contains(id), "unacked {} lost", id);
        }
    }
    s.rewind();
    m.in_flight.clear();
    m.last_read = 0;
    Ok(())
}

fn run(ops: Vec<Op>, tail: bool) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _) = open(dir.path(), cfg(tail));
    let mut m = Model {
        payloads: BTreeMap::new(),
        acked: BTreeSet::new(),
        in_flight: Vec::new(),
        last_read: 0,
        floor: 0,
    };
    let mut seq = 0u64;
    for op in ops {
        match op {
            Op::Append(sizes) => {
                let batch: Vec<Vec<u8>> = sizes
                    .iter()
                    .map(|&n| {
                        seq += 1;
                        let mut p = format!("{seq}|").into_bytes();
                        p.resize(p.len() + n, (seq % 251) as u8);
                        p
                    })
                    .collect();
                let o = s.append_batch(&batch).unwrap();
                prop_assert!(m
                    .payloads
                    .keys()
                    .next_back()
                    .is_none_or(|&l| o.first_id > l));
                for (i, p) in batch.into_iter().enumerate() {
                    m.payloads.insert(o.first_id + i as u64, p);
                }
            }
            Op::Read(k) => {
                let got = s.next_batch(k, usize::MAX).unwrap();
                prop_assert!(got.len() <= k);
                for r in &got {
                    prop_assert!(r.id > m.last_read, "redelivered {} in one lifetime", r.id);
                    m.last_read = r.id;
                    prop_assert_eq!(Some(&r.payload.to_vec()), m.payloads.get(&r.id));
                    if !m.acked.contains(&r.id) {
                        m.in_flight.push(r.id);
                    }
                }
                // No unacked record was skipped.
                if let (Some(first), Some(last)) = (got.first(), got.last()) {
                    for id in m.payloads.range(first.id..=last.id).map(|(id, _)| *id) {
                        prop_assert!(m.acked.contains(&id) || got.iter().any(|r| r.id == id));
                    }
                }
            }
            Op::Ack(i) => {
                if !m.in_flight.is_empty() {
                    let id = m.in_flight.swap_remove(i % m.in_flight.len());
                    s.ack(id);
                    m.acked.insert(id);
                }
            }
            Op::AckAll => {
                s.ack_many(&m.in_flight);
                m.acked.extend(m.in_flight.drain(..));
            }
            Op::Flush => {
                s.flush().unwrap();
                m.floor = m.watermark();
                let st = s.stats();
                prop_assert_eq!(st.watermark, m.floor);
                prop_assert_eq!(st.persisted_watermark, m.floor);
            }
            Op::Crash | Op::CloseReopen => {
                if matches!(op, Op::CloseReopen) {
                    s.close().unwrap();
                    m.floor = m.watermark();
                } else {
                    drop(s);
                }
                let (s2, ev) = open(dir.path(), cfg(tail));
                prop_assert!(ev.iter().all(|e| !e.is_data_loss()), "{:?}", ev);
                s = s2;
                // Acks above the persisted watermark may be forgotten.
                check_reopened(&s, &mut m)?;
                let w = s.stats().watermark;
                m.acked.retain(|&id| id < w);
            }
        }
        let st = s.stats();
        prop_assert!(
            st.records_pending
                >= m.payloads.keys().filter(|id| !m.acked.contains(id)).count() as u64
        );
    }
    drop(s);
    let (s, _) = open(dir.path(), cfg(tail));
    check_reopened(&s, &mut m)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn model_with_memory_tail(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops, true)?;
    }

    #[test]
    fn model_disk_only(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops, false)?;
    }
}
