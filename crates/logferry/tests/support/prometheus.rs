//! The one reader of `/metrics` in the tests: a strict parser of the Prometheus text format
//! (0.0.4), so that every test that reads a metric also checks the exposition is well formed.
//!
//! Strict where scrapers are: one `# HELP` and one `# TYPE` per family, before its samples;
//! all samples of a family together (no other family in between); sample names that belong to
//! their family (`_bucket`, `_sum`, `_count` for a histogram); valid metric and label names,
//! escaped label values, no label twice, no series twice, numeric values; a histogram's `+Inf`
//! bucket equal to its `_count`. (The Python client's `text_string_to_metric_families` accepts
//! a split family silently, which is how the defect this guards against went unnoticed.)

use std::collections::HashSet;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample's own name (a histogram's end in `_bucket`, `_sum` or `_count`).
    pub name: String,
    /// Labels in the order written.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

/// One family: header and samples.
#[derive(Debug, Clone)]
pub struct Family {
    /// The family name.
    pub name: String,
    /// `counter`, `gauge`, `histogram`, `summary` or `untyped`.
    pub kind: String,
    /// The help text.
    pub help: String,
    /// Its samples, in order.
    pub samples: Vec<Sample>,
}

/// A parsed exposition.
#[derive(Debug, Clone)]
pub struct Exposition {
    /// Families in the order they appear.
    pub families: Vec<Family>,
}

impl Exposition {
    /// Parses `text`, or says what breaks the format and on which line.
    pub fn parse(text: &str) -> Result<Exposition, String> {
        let mut families: Vec<Family> = Vec::new();
        let mut series = HashSet::new();
        for (n, line) in text.lines().enumerate() {
            let at = |why: String| format!("line {}: {why}: {line:?}", n + 1);
            if line.trim().is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# ") {
                let (word, rest) = rest.split_once(' ').unwrap_or((rest, ""));
                let (name, value) = rest.split_once(' ').unwrap_or((rest, ""));
                if word != "HELP" && word != "TYPE" {
                    continue; // a comment
                }
                check_metric_name(name).map_err(at)?;
                let known = families.iter().position(|f| f.name == name);
                let current = families.last().map(|f| f.name.as_str());
                let family = match known {
                    Some(i) if current == Some(name) && families[i].samples.is_empty() => {
                        &mut families[i]
                    }
                    Some(_) => return Err(at(format!("a second {word} for `{name}`"))),
                    None => {
                        families.push(Family {
                            name: name.to_string(),
                            kind: String::new(),
                            help: String::new(),
                            samples: Vec::new(),
                        });
                        families.last_mut().expect("just pushed")
                    }
                };
                let slot = if word == "HELP" {
                    &mut family.help
                } else {
                    &mut family.kind
                };
                if !slot.is_empty() {
                    return Err(at(format!("a second {word} for `{name}`")));
                }
                if word == "TYPE"
                    && !["counter", "gauge", "histogram", "summary", "untyped"].contains(&value)
                {
                    return Err(at(format!("unknown type `{value}`")));
                }
                *slot = value.to_string();
                continue;
            }
            let sample = parse_sample(line).map_err(at)?;
            let Some(family) = families.last_mut() else {
                return Err(at("a sample before any TYPE".into()));
            };
            if family.kind.is_empty() {
                return Err(at(format!("`{}` has no TYPE", family.name)));
            }
            if !belongs(&sample.name, family) {
                let why = if families.iter().any(|f| belongs(&sample.name, f)) {
                    "its family's samples are split by another family"
                } else {
                    "a sample outside its family (no TYPE for it)"
                };
                return Err(at(why.into()));
            }
            let mut key: Vec<String> = sample
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            key.sort();
            if !series.insert((sample.name.clone(), key)) {
                return Err(at("the same series twice".into()));
            }
            family.samples.push(sample);
        }
        for f in &families {
            if f.kind.is_empty() || f.help.is_empty() {
                return Err(format!("`{}` lacks its TYPE or HELP", f.name));
            }
            if f.kind == "histogram" {
                check_histogram(f)?;
            }
        }
        Ok(Exposition { families })
    }

    /// The family `name`.
    pub fn family(&self, name: &str) -> Option<&Family> {
        self.families.iter().find(|f| f.name == name)
    }

    /// The sum of every sample named `name` whose labels include all of `labels` (each written
    /// `key="value"`, as in the text); None when there is no such sample.
    pub fn sum(&self, name: &str, labels: &[&str]) -> Option<f64> {
        let wanted: Vec<(String, String)> = labels
            .iter()
            .map(|l| parse_labels(l).expect("a label selector").remove(0))
            .collect();
        let matching: Vec<f64> = self
            .families
            .iter()
            .flat_map(|f| &f.samples)
            .filter(|s| s.name == name && wanted.iter().all(|w| s.labels.contains(w)))
            .map(|s| s.value)
            .collect();
        (!matching.is_empty()).then(|| matching.iter().sum())
    }

    /// The value of the one series written `name{labels}` (exactly those labels, any order).
    pub fn get(&self, series: &str) -> Option<f64> {
        let wanted = parse_sample(&format!("{series} 0")).expect("a series selector");
        let mut want: Vec<_> = wanted.labels.clone();
        want.sort();
        self.families
            .iter()
            .flat_map(|f| &f.samples)
            .find(|s| {
                let mut have = s.labels.clone();
                have.sort();
                s.name == wanted.name && have == want
            })
            .map(|s| s.value)
    }
}

/// Whether a sample called `name` is one of `family`'s.
fn belongs(name: &str, family: &Family) -> bool {
    let f = family.name.as_str();
    name == f
        || (matches!(family.kind.as_str(), "histogram" | "summary")
            && ["_bucket", "_sum", "_count"]
                .iter()
                .any(|suffix| name.strip_suffix(suffix) == Some(f)))
}

/// One histogram series (labels without `le`): its `+Inf` bucket and its `_count`.
type HistogramEnds = (Vec<(String, String)>, Option<f64>, Option<f64>);

fn check_histogram(f: &Family) -> Result<(), String> {
    let mut by_series: Vec<HistogramEnds> = Vec::new();
    for s in &f.samples {
        let mut base: Vec<_> = s
            .labels
            .iter()
            .filter(|(k, _)| k != "le")
            .cloned()
            .collect();
        base.sort();
        let i = match by_series.iter().position(|(b, _, _)| *b == base) {
            Some(i) => i,
            None => {
                by_series.push((base, None, None));
                by_series.len() - 1
            }
        };
        let le = s
            .labels
            .iter()
            .find(|(k, _)| k == "le")
            .map(|(_, v)| v.as_str());
        if s.name.ends_with("_bucket") && le == Some("+Inf") {
            by_series[i].1 = Some(s.value);
        } else if s.name.ends_with("_count") {
            by_series[i].2 = Some(s.value);
        } else if s.name.ends_with("_bucket") && le.is_none() {
            return Err(format!("`{}`: a bucket without `le`", f.name));
        }
    }
    for (labels, inf, count) in by_series {
        if inf.is_none() || inf != count {
            return Err(format!(
                "`{}` {labels:?}: +Inf bucket {inf:?} differs from _count {count:?}",
                f.name
            ));
        }
    }
    Ok(())
}

fn check_metric_name(name: &str) -> Result<(), String> {
    let ok = name.chars().enumerate().all(|(i, c)| {
        c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
    });
    if name.is_empty() || !ok {
        return Err(format!("`{name}` is not a metric name"));
    }
    Ok(())
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    check_metric_name(name)?;
    let (labels, rest) = if line[name_end..].starts_with('{') {
        let close = find_label_end(&line[name_end..]).ok_or("unterminated labels")?;
        (
            parse_labels(&line[name_end + 1..name_end + close])?,
            &line[name_end + close + 1..],
        )
    } else {
        (Vec::new(), &line[name_end..])
    };
    let mut fields = rest.split_whitespace();
    let value = fields.next().ok_or("no value")?;
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|_| format!("`{v}` is not a number"))?,
    };
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("`{ts}` is not a timestamp"))?;
    }
    if fields.next().is_some() {
        return Err("text after the value and timestamp".into());
    }
    if !rest.starts_with(' ') {
        return Err("no space before the value".into());
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// The index of the `}` closing the label set that `s` starts with (`{`), quotes respected.
fn find_label_end(s: &str) -> Option<usize> {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in s.char_indices().skip(1) {
        match (in_quotes, escaped, c) {
            (true, true, _) => escaped = false,
            (true, false, '\\') => escaped = true,
            (_, false, '"') => in_quotes = !in_quotes,
            (false, _, '}') => return Some(i),
            _ => {}
        }
    }
    None
}

/// `a="x",b="y\"z"` into pairs, values unescaped.
fn parse_labels(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once("=\"")
            .ok_or(format!("bad label in `{s}`"))?;
        let valid_key = !key.is_empty()
            && key
                .chars()
                .enumerate()
                .all(|(i, c)| c.is_ascii_alphabetic() || c == '_' || (i > 0 && c.is_ascii_digit()));
        if !valid_key {
            return Err(format!("`{key}` is not a label name"));
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err(format!("unterminated value of `{key}`")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?} in `{key}`")),
                },
                Some((_, '\n')) => return Err(format!("raw newline in `{key}`")),
                Some((_, c)) => value.push(c),
            }
        };
        if out.iter().any(|(k, _)| k == key) {
            return Err(format!("label `{key}` twice"));
        }
        out.push((key.to_string(), value));
        rest = &after[end + 1..];
        rest = match rest.strip_prefix(',') {
            Some(r) => r,
            None if rest.is_empty() => rest,
            None => return Err(format!("no comma after `{key}`")),
        };
    }
    Ok(out)
}
