//! RFC 5424 structured data: finding where it ends, and iterating over it on demand.
//!
//! The parser only needs to know where the structured data stops and the message begins;
//! most consumers then forward the raw text. Skipping is therefore a single pass that
//! honours quoting and the `\"`, `\\` and `\]` escapes inside parameter values (a `]` in a
//! quoted value does not end the element). Callers who want individual parameters use the
//! lazy [`SdElements`] iterator, which allocates only to unescape a value that needs it.

use std::borrow::Cow;

/// End (exclusive) of the run of SD elements starting at `start`, where `bytes[start]` is
/// `[`. `None` if an element is not terminated, which callers treat as "no structured data".
pub(crate) fn scan(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start;
    while bytes.get(i) == Some(&b'[') {
        i = element_end(bytes, i)?;
    }
    Some(i)
}

/// End (exclusive, just past `]`) of the element opening at `start`.
fn element_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    let mut quoted = false;
    loop {
        let b = *bytes.get(i)?;
        i += 1;
        match (quoted, b) {
            (true, b'\\') => i += 1,
            (true, b'"') => quoted = false,
            (false, b'"') => quoted = true,
            (false, b']') => return Some(i),
            _ => {}
        }
    }
}

/// Iterator over the elements of a structured-data string such as
/// `[id1 a="1"][id2 b="x\]y"]`.
#[derive(Debug, Clone)]
pub struct SdElements<'a> {
    rest: &'a str,
}

impl<'a> SdElements<'a> {
    pub(crate) fn new(sd: &'a str) -> Self {
        SdElements { rest: sd }
    }
}

impl<'a> Iterator for SdElements<'a> {
    type Item = SdElement<'a>;

    fn next(&mut self) -> Option<SdElement<'a>> {
        let Some(end) = element_end(self.rest.as_bytes(), 0).filter(|_| self.rest.starts_with('['))
        else {
            self.rest = "";
            return None;
        };
        // `[` and `]` are ASCII, so these are char boundaries; `get` keeps it panic-free.
        let inner = self.rest.get(1..end - 1).unwrap_or_default();
        self.rest = self.rest.get(end..).unwrap_or_default();
        let (id, params) = inner.split_once(' ').unwrap_or((inner, ""));
        Some(SdElement { id, params })
    }
}

/// One `[SD-ID param="value" ...]` element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdElement<'a> {
    /// The SD-ID, e.g. `exampleSDID@32473` or `timeQuality`.
    pub id: &'a str,
    params: &'a str,
}

impl<'a> SdElement<'a> {
    /// The element's parameters in order.
    pub fn params(&self) -> SdParams<'a> {
        SdParams { rest: self.params }
    }
}

/// Iterator over the `name="value"` pairs of one element; stops at the first malformed pair.
#[derive(Debug, Clone)]
pub struct SdParams<'a> {
    rest: &'a str,
}

impl<'a> Iterator for SdParams<'a> {
    type Item = SdParam<'a>;

    fn next(&mut self) -> Option<SdParam<'a>> {
        let rest = self.rest.trim_start_matches(' ');
        self.rest = "";
        let (name, after) = rest.split_once("=\"")?;
        let bytes = after.as_bytes();
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            match b {
                b'\\' => i += 2,
                b'"' => {
                    let raw_value = after.get(..i)?;
                    self.rest = after.get(i + 1..).unwrap_or_default();
                    return Some(SdParam { name, raw_value });
                }
                _ => i += 1,
            }
        }
        None
    }
}

/// One SD parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdParam<'a> {
    /// The PARAM-NAME.
    pub name: &'a str,
    /// The PARAM-VALUE as sent, still escaped.
    pub raw_value: &'a str,
}

impl<'a> SdParam<'a> {
    /// The value with `\"`, `\\` and `\]` unescaped; borrowed unless there was an escape.
    /// A backslash before any other character is kept, as RFC 5424 requires.
    pub fn value(&self) -> Cow<'a, str> {
        if !self.raw_value.contains('\\') {
            return Cow::Borrowed(self.raw_value);
        }
        let mut out = String::with_capacity(self.raw_value.len());
        let mut chars = self.raw_value.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.clone().next() {
                    Some(e @ ('"' | '\\' | ']')) => {
                        out.push(e);
                        chars.next();
                    }
                    _ => out.push('\\'),
                }
            } else {
                out.push(c);
            }
        }
        Cow::Owned(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_honours_quotes_and_escapes() {
        let sd = br#"[a x="1\]2" y="q\"]" z="\\"][b]rest"#;
        let end = scan(sd, 0);
        assert_eq!(end, Some(sd.len() - 4));
        assert_eq!(scan(b"[a x=\"unterminated]", 0), None);
        assert_eq!(scan(b"[a", 0), None);
        assert_eq!(scan(b"[a x=\"\\", 0), None);
        assert_eq!(scan(b"-", 0), Some(0));
    }

    #[test]
    fn iterates_elements_and_params() {
        let sd = r#"[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"][meta x="a\]b\"c\\d\e"][empty]"#;
        let elements: Vec<_> = SdElements::new(sd).collect();
        assert_eq!(elements.len(), 3);
        assert_eq!(elements[0].id, "exampleSDID@32473");
        let params: Vec<_> = elements[0]
            .params()
            .map(|p| (p.name, p.value().into_owned()))
            .collect();
        assert_eq!(
            params,
            [
                ("iut", "3".to_owned()),
                ("eventSource", "Application".to_owned()),
                ("eventID", "1011".to_owned())
            ]
        );
        let p: Vec<_> = elements[1].params().collect();
        assert_eq!(p[0].raw_value, r#"a\]b\"c\\d\e"#);
        assert_eq!(p[0].value(), r#"a]b"c\d\e"#);
        assert_eq!(elements[2].id, "empty");
        assert_eq!(elements[2].params().count(), 0);
    }
}
