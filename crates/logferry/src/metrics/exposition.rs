//! The Prometheus text format (0.0.4), written so that a family cannot be split.
//!
//! The format's one structural rule is that all samples of a metric family follow its single
//! `# HELP` / `# TYPE` header, with no other family in between. Writing lines in the order the
//! renderer visits things breaks it as soon as there are two sinks or two spooled sources (each
//! visit writes one sample of several families). So the renderer never writes lines: it asks an
//! [`Exposition`] for a [`Family`] by name and adds samples to it in any order, and
//! [`Exposition::finish`] writes each family whole, in the order families were first declared.
//!
//! Why not the `prometheus-client` crate: its text encoder writes OpenMetrics (a `# EOF` line,
//! `_total` added to counter names, its own content type), which would rename our counters and
//! change what scrapers see, and it wants each metric registered as its own typed object while
//! ours are the pipeline's plain atomics read at scrape time. What we need from it is only the
//! grouping, which is this file.

use std::fmt::Write as _;

/// A family's `# TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// `_bucket{le=...}`, `_sum` and `_count` samples.
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A family's name, type and help text.
pub(super) type Spec = (&'static str, Kind, &'static str);

/// One family: its header and the sample lines written so far.
pub(super) struct Family {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    samples: String,
}

impl Family {
    /// A sample of the family itself; `labels` is `a="x",b="y"` (already escaped) or empty.
    pub(super) fn sample(&mut self, labels: &str, value: impl std::fmt::Display) {
        self.suffixed("", labels, value);
    }

    /// A histogram's `_bucket`, `_sum` or `_count` sample.
    pub(super) fn suffixed(&mut self, suffix: &str, labels: &str, value: impl std::fmt::Display) {
        debug_assert!(suffix.is_empty() || self.kind == Kind::Histogram);
        let name = self.name;
        let _ = if labels.is_empty() {
            writeln!(self.samples, "{name}{suffix} {value}")
        } else {
            writeln!(self.samples, "{name}{suffix}{{{labels}}} {value}")
        };
    }
}

/// The families of one scrape.
#[derive(Default)]
pub(super) struct Exposition {
    families: Vec<Family>,
}

impl Exposition {
    /// The family `name`, declared on first use (its header is written even with no sample,
    /// so a scraper sees every family logferry has).
    pub(super) fn family(
        &mut self,
        name: &'static str,
        kind: Kind,
        help: &'static str,
    ) -> &mut Family {
        // A few dozen families: a linear search costs less than hashing every sample's name.
        let at = match self.families.iter().position(|f| f.name == name) {
            Some(at) => at,
            None => {
                self.families.push(Family {
                    name,
                    kind,
                    help,
                    samples: String::new(),
                });
                self.families.len() - 1
            }
        };
        let family = &mut self.families[at];
        debug_assert!(
            family.kind == kind && family.help == help,
            "{name} declared twice differently"
        );
        family
    }

    /// The family `spec` names (see [`Exposition::family`]).
    pub(super) fn declare(&mut self, (name, kind, help): Spec) -> &mut Family {
        self.family(name, kind, help)
    }

    /// A counter family.
    pub(super) fn counter(&mut self, name: &'static str, help: &'static str) -> &mut Family {
        self.family(name, Kind::Counter, help)
    }

    /// A gauge family.
    pub(super) fn gauge(&mut self, name: &'static str, help: &'static str) -> &mut Family {
        self.family(name, Kind::Gauge, help)
    }

    /// The text: each family's header followed by all its samples.
    pub(super) fn finish(self) -> String {
        let size = self.families.iter().map(|f| f.samples.len() + 128).sum();
        let mut out = String::with_capacity(size);
        for f in self.families {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}",
                name = f.name,
                help = f.help,
                kind = f.kind.as_str()
            );
            out.push_str(&f.samples);
        }
        out
    }
}

/// A label value escaped for the text format (backslash, double quote, newline).
pub(super) fn label_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_added_in_any_order_come_out_under_one_header_per_family() {
        let mut x = Exposition::default();
        for sink in ["a", "b"] {
            let l = format!("sink=\"{sink}\"");
            x.counter("t_dead_total", "Dead.").sample(&l, 1);
            x.gauge("t_age_seconds", "Age.").sample(&l, 2);
        }
        let text = x.finish();
        assert_eq!(
            text,
            "# HELP t_dead_total Dead.\n# TYPE t_dead_total counter\n\
             t_dead_total{sink=\"a\"} 1\nt_dead_total{sink=\"b\"} 1\n\
             # HELP t_age_seconds Age.\n# TYPE t_age_seconds gauge\n\
             t_age_seconds{sink=\"a\"} 2\nt_age_seconds{sink=\"b\"} 2\n"
        );
    }

    #[test]
    fn a_family_without_samples_still_has_its_header_and_labels_are_escaped() {
        let mut x = Exposition::default();
        x.gauge("t_spool_bytes", "Bytes.");
        x.family("t_latency_seconds", Kind::Histogram, "Latency.")
            .suffixed(
                "_count",
                &format!("sink=\"{}\"", label_value("a\"b\\c\nd")),
                3,
            );
        assert_eq!(
            x.finish(),
            "# HELP t_spool_bytes Bytes.\n# TYPE t_spool_bytes gauge\n\
             # HELP t_latency_seconds Latency.\n# TYPE t_latency_seconds histogram\n\
             t_latency_seconds_count{sink=\"a\\\"b\\\\c\\nd\"} 3\n"
        );
    }
}
