//! The TOML config parser on arbitrary text.
//!
//! Invariants: `logferry::config::parse` never panics; when it fails, every error names the
//! file, a line between 1 and the number of lines + 1, and a non-empty key and message; the
//! same text parses the same way twice (the same set of errors).

use std::path::Path;

/// One input; panics when an invariant breaks. Input that is not UTF-8 is skipped (what
/// libFuzzer's `&str` targets do).
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/etc/logferry/fuzz.toml");
    // Every `${VAR}` is unset, except one that expands to text that looks like TOML.
    let env = |name: &str| (name == "FUZZ").then(|| "\"]\n[x]\ny = 1 #".to_string());
    let first = logferry::config::parse(path, text, &env);
    let lines = text.lines().count();
    if let Err(errors) = &first {
        assert!(!errors.0.is_empty(), "Err with no error");
        for e in &errors.0 {
            assert_eq!(e.file, path);
            assert!(
                e.line >= 1 && e.line <= lines + 1,
                "line {} outside 1..={} for {e}",
                e.line,
                lines + 1
            );
            assert!(!e.key.is_empty(), "empty key: {e}");
            assert!(!e.message.is_empty(), "empty message: {e}");
            let _ = e.to_string();
        }
        let _ = errors.to_string();
    }
    let second = logferry::config::parse(path, text, &env);
    match (&first, &second) {
        (Err(a), Err(b)) => {
            // As sets: the order may follow a map's iteration order.
            let mut a: Vec<String> = a.0.iter().map(ToString::to_string).collect();
            let mut b: Vec<String> = b.0.iter().map(ToString::to_string).collect();
            a.sort();
            b.sort();
            assert_eq!(a, b, "errors differ between two parses");
        }
        (Ok(_), Ok(_)) => {}
        _ => panic!("one parse failed and the other did not"),
    }
}
