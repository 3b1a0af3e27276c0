//! A string that must never be printed: AWS secret keys, session tokens, external ids.
//!
//! [`Secret`]'s `Debug` and `Display` print `**redacted**`, so a `Config` can be logged,
//! `{:?}`-dumped or put in an error without thinking about it; the only way to the value is
//! [`Secret::expose`], which is called in exactly one place (handing credentials to the SDK).
//! Deserializing it never echoes the value either: serde's usual "invalid type" message quotes
//! what it found, and a mistyped secret must not end up in `logferry validate`'s output.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// What every secret prints as.
pub const REDACTED: &str = "**redacted**";

/// The SDK's one log event that can carry a credential: at `trace`, the smithy orchestrator
/// logs each HTTP response body, and when the `LOG_SENSITIVE_BODIES=true` environment variable
/// is set it does so even for responses the SDK knows to be sensitive, such as STS
/// `AssumeRole`'s, which hold a secret access key and a session token (seen for real with
/// `assume_role` against moto). The CLI turns this target off, whatever `LOGFERRY_LOG` says.
/// Everything else the SDK logs at `trace` redacts secrets itself (`Authorization` and
/// `x-amz-security-token` headers, canonical requests, `Credentials`); `tests/secrets.rs`
/// checks that on every run. It does print the access key id at `debug` and `trace`.
pub const SDK_RESPONSE_BODY_TARGET: &str = "aws_smithy_runtime::client::orchestrator::http";

/// The `tracing` directive that silences [`SDK_RESPONSE_BODY_TARGET`].
pub const SDK_RESPONSE_BODY_OFF: &str = "aws_smithy_runtime::client::orchestrator::http=off";

/// A secret string. Compare with [`Secret::expose`]; print freely (it prints `**redacted**`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself: only for handing it to whatever needs it (the SDK's credentials).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when the value is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret::new(v))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Secret, E> {
                Ok(Secret(v))
            }
            // Every other type lands here through serde's defaults, which would quote the value
            // ("invalid type: integer `1234`"); say what was expected and nothing else.
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Secret, E> {
                Err(E::custom("must be a string (value not shown)"))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Secret, E> {
                Err(E::custom("must be a string (value not shown)"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Secret, E> {
                Err(E::custom("must be a string (value not shown)"))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Secret, E> {
                Err(E::custom("must be a string (value not shown)"))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Secret, A::Error> {
                Err(de::Error::custom("must be a string (value not shown)"))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<Secret, A::Error> {
                Err(de::Error::custom("must be a string (value not shown)"))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Holder {
        #[allow(dead_code)]
        key: Secret,
    }

    #[test]
    fn the_sdk_body_directive_parses_and_names_the_target() {
        let d: tracing_subscriber::filter::Directive =
            SDK_RESPONSE_BODY_OFF.parse().expect("valid directive");
        assert_eq!(d.to_string(), SDK_RESPONSE_BODY_OFF);
        assert!(SDK_RESPONSE_BODY_OFF.starts_with(SDK_RESPONSE_BODY_TARGET));
    }

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("wJalrXUtnFEMI/K7MDENG");
        assert_eq!(format!("{s}"), REDACTED);
        assert_eq!(format!("{s:?}"), REDACTED);
        assert_eq!(format!("{s:#?}"), REDACTED);
        assert_eq!(s.expose(), "wJalrXUtnFEMI/K7MDENG");
    }

    #[test]
    fn a_mistyped_secret_is_not_quoted_in_the_error() {
        for text in [
            "key = 8675309123",
            "key = 3.25",
            "key = true",
            "key = [\"in-an-array\"]",
            "key = { inner = \"in-a-table\" }",
        ] {
            // Through a `toml::Value`, as `config` does (a parse error of the text itself would
            // quote its line; that path is `config::diag`'s to keep clean).
            let value: toml::Value = toml::from_str(text).expect("valid TOML");
            let err = Holder::deserialize(value).expect_err(text).to_string();
            assert!(err.contains("must be a string (value not shown)"), "{err}");
            for leak in ["8675309123", "3.25", "in-an-array", "in-a-table"] {
                assert!(!err.contains(leak), "{text}: {err}");
            }
        }
        let value: toml::Value = toml::from_str("key = \"abc\"").expect("valid TOML");
        let ok = Holder::deserialize(value).expect("string");
        assert_eq!(ok.key.expose(), "abc");
        assert!(!format!("{ok:?}").contains("abc"));
    }
}
