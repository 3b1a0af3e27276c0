//! Kubernetes container log lines: CRI and Docker json-file decoding, the rejoining of
//! partial records, and pod metadata from a log path. Every byte of these comes from a pod.
//!
//! Input layout: `[max_bytes][lines...]`. The lines (split at `\n`, as the tailer splits
//! them) are decoded with `parse_auto`, `parse_cri` and `parse_docker_json`, and the records
//! fed to a `PartialJoiner` capped at `max_bytes` (small, so the cap is exercised); each line
//! is also read as a log path.
//!
//! Invariants:
//! * `parse_auto` is `parse_docker_json` for a line starting with `{`, else `parse_cri`;
//! * a CRI message is a slice of its line (borrowed, never copied);
//! * a decoded timestamp is what `logferry_time::parse_rfc3339_ms` makes of the line's time
//!   field (CRI), and is within the years 0000..=9999;
//! * a joined event keeps at most `max_bytes`, and its message plus `truncated_bytes` is
//!   exactly the sum of its parts' messages; it ends at the offset of its last part;
//! * while parts are held, `held_from` is never past the first held part's start (a saved
//!   position must not skip them), and it is `None` once everything is flushed;
//! * pod metadata from a path has no empty namespace, pod or container.

use std::borrow::Cow;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use logferry_tail::container::{
    parse_auto, parse_cri, parse_docker_json, pod_info_from_path, PartialJoiner, Stream,
};

/// Milliseconds of 0000-01-01T00:00:00Z and of 10000-01-01T00:00:00Z, give or take a day of
/// zone offset.
const MIN_MS: i64 = -62_167_219_200_000 - 86_400_000;
const MAX_MS: i64 = 253_402_300_800_000 + 86_400_000;

fn within(line: &[u8], part: &[u8]) -> bool {
    let l = line.as_ptr() as usize;
    let p = part.as_ptr() as usize;
    part.is_empty() || (p >= l && p + part.len() <= l + line.len())
}

/// Per stream: message bytes fed since the last joined event, and where its first part began.
#[derive(Default, Clone, Copy)]
struct Open {
    bytes: u64,
    from: Option<u64>,
}

/// One input; panics when an invariant breaks.
pub fn run(data: &[u8]) {
    let Some((&max, rest)) = data.split_first() else {
        return;
    };
    let max_bytes = usize::from(max % 64) + 1;
    let mut joiner = PartialJoiner::new(max_bytes);
    let mut open = [Open::default(); 2];
    let mut offset = 0u64;
    for line in rest.split(|b| *b == b'\n') {
        let start = offset;
        offset += line.len() as u64 + 1;

        if let Some(info) = pod_info_from_path(Path::new(OsStr::from_bytes(line))) {
            assert!(!info.namespace.is_empty() && !info.pod.is_empty());
            assert!(!info.container.is_empty());
        }

        let parsed = parse_auto(line);
        let direct = if line.first() == Some(&b'{') {
            parse_docker_json(line)
        } else {
            parse_cri(line)
        };
        assert_eq!(parsed, direct, "parse_auto chose another format");
        let Ok(record) = parsed else {
            continue;
        };
        assert!((MIN_MS..=MAX_MS).contains(&record.timestamp_ms));
        if line.first() != Some(&b'{') {
            let time = line.split(|b| *b == b' ').next().unwrap_or_default();
            assert_eq!(
                logferry_time::parse_rfc3339_ms(time),
                Some(record.timestamp_ms)
            );
            if let Cow::Borrowed(m) = &record.message {
                assert!(within(line, m), "a CRI message is not a slice of its line");
            } else {
                panic!("a CRI message was copied");
            }
        }

        let i = stream_index(record.stream);
        open[i].bytes += record.message.len() as u64;
        open[i].from.get_or_insert(start);
        if let Some(j) = joiner.push(record, start, offset) {
            let k = stream_index(j.stream);
            assert!(j.message.len() <= max_bytes, "joined past max_bytes");
            assert_eq!(
                j.message.len() as u64 + j.truncated_bytes,
                open[k].bytes,
                "bytes lost or invented in a join"
            );
            assert_eq!(j.end_offset, offset);
            open[k] = Open::default();
        }
        let oldest = open.iter().filter_map(|o| o.from).min();
        match (joiner.held_from(), oldest) {
            (Some(h), Some(o)) => assert!(h <= o, "held_from {h} past the first held part {o}"),
            (None, None) => {}
            (h, o) => panic!("held_from {h:?} but parts held from {o:?}"),
        }
    }
    for j in joiner.flush() {
        let k = stream_index(j.stream);
        assert!(j.message.len() <= max_bytes);
        assert_eq!(j.message.len() as u64 + j.truncated_bytes, open[k].bytes);
        open[k] = Open::default();
    }
    assert_eq!(joiner.held_from(), None, "something is held after a flush");
}

fn stream_index(s: Stream) -> usize {
    match s {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}
