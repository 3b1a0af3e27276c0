//! Payloads written straight into the write buffer (`Spool::append_payloads`): the same
//! records as `append_batch`, from memory and from disk, and a batch whose payloads are not
//! as long as they said is refused whole.

mod common;

use bytes::BytesMut;
use common::*;
use logferry_spool::{Payloads, SpoolConfig, SpoolError};

/// Payload `i` is a prefix and the number `i`, written in two parts.
struct Numbered {
    prefix: &'static [u8],
    count: usize,
    /// Writes one byte more than it announces for this payload.
    lie_at: Option<usize>,
}

impl Payloads for Numbered {
    fn count(&self) -> usize {
        self.count
    }

    fn len(&self, i: usize) -> usize {
        self.prefix.len() + i.to_string().len()
    }

    fn write(&self, i: usize, out: &mut BytesMut) {
        out.extend_from_slice(self.prefix);
        out.extend_from_slice(i.to_string().as_bytes());
        if self.lie_at == Some(i) {
            out.extend_from_slice(b"!");
        }
    }
}

fn expected(prefix: &[u8], count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| [prefix, i.to_string().as_bytes()].concat())
        .collect()
}

#[test]
fn written_payloads_read_back_from_memory_and_from_disk() {
    for tail in [1 << 20, 0] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SpoolConfig {
            memory_tail_bytes: tail,
            ..small_cfg()
        };
        let (s, _) = open(dir.path(), cfg.clone());
        let batch = Numbered {
            prefix: b"frame ",
            count: 300,
            lie_at: None,
        };
        let o = s.append_payloads(&batch).unwrap();
        assert_eq!((o.first_id, o.count), (1, 300));
        s.append_batch(&[b"plain".as_slice()]).unwrap();
        let mut want = expected(b"frame ", 300);
        want.push(b"plain".to_vec());
        let got: Vec<Vec<u8>> = drain(&s).iter().map(|r| r.payload.to_vec()).collect();
        assert_eq!(got, want, "memory tail {tail}");
        s.close().unwrap();
        // Recovery checks every record's checksums.
        let (s, events) = open(dir.path(), cfg);
        assert!(events.is_empty(), "{events:?}");
        let got: Vec<Vec<u8>> = drain(&s).iter().map(|r| r.payload.to_vec()).collect();
        assert_eq!(got, want, "after reopen");
    }
}

#[test]
fn a_payload_longer_than_announced_is_refused_with_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open(dir.path(), small_cfg());
    let liar = Numbered {
        prefix: b"x",
        count: 10,
        lie_at: Some(7),
    };
    let e = s.append_payloads(&liar).unwrap_err();
    assert!(matches!(e, SpoolError::PayloadLengths { .. }), "{e}");
    let o = s.append_batch(&[b"after".as_slice()]).unwrap();
    assert_eq!(o.first_id, 1, "nothing of the refused batch took an id");
    let got: Vec<Vec<u8>> = drain(&s).iter().map(|r| r.payload.to_vec()).collect();
    assert_eq!(got, [b"after".to_vec()]);
}
