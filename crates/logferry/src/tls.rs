//! TLS for syslog over TCP (RFC 5425): the server certificate, optional client certificates
//! (mTLS), and reloading both when their files change.
//!
//! Why reload by polling: certificates on a fleet are rotated by something else (cert-manager
//! writing a Kubernetes secret volume, an ACME client, a config-management run) that only
//! replaces files. Checking the files' modification time, size and inode every
//! `reload_interval` (default 5 s) needs no cooperation from that tool; SIGHUP also works, since
//! a reload rebuilds every listener from the files. A reload swaps the configuration used for
//! *new* handshakes only: established sessions keep theirs, so no connection is dropped. A
//! reload that fails (a key that does not match the certificate because only one of the two
//! files has been written yet, say) keeps the previous certificate and is retried when the
//! files change again.
//!
//! TLS 1.2 and 1.3 only (rustls has nothing older), with the `ring` provider.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use serde::Deserialize;

/// Whether a TLS listener requires client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// A client without a certificate signed by `client_ca` is refused.
    Required,
    /// A client may present none; one it presents must be signed by `client_ca`.
    Optional,
}

/// `[sources.NAME.tls]`: the server side of syslog over TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates client certificates must chain to (mTLS); None: not asked for.
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: required or optional.
    pub client_auth: ClientAuth,
    /// Time a client has to complete the handshake.
    pub handshake_timeout: Duration,
    /// How often the files are checked for a new certificate.
    pub reload_interval: Duration,
}

/// A file's identity for change detection: (modified, length, inode).
type Stamp = Option<(std::time::SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    // Follow symlinks: Kubernetes secret volumes swap a `..data` symlink.
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: bad PEM", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{}: no CERTIFICATE in the file", path.display());
    }
    Ok(certs)
}

/// Builds the rustls server configuration from the files `s` names.
pub fn load(s: &TlsSettings) -> anyhow::Result<Arc<ServerConfig>> {
    let certs = read_certs(&s.cert)?;
    let key = PrivateKeyDer::from_pem_file(&s.key)
        .with_context(|| format!("{}: no usable private key", s.key.display()))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS versions")?;
    let builder = match (&s.client_ca, s.client_auth) {
        (Some(ca), auth) => {
            let mut roots = RootCertStore::empty();
            for c in read_certs(ca)? {
                roots
                    .add(c)
                    .with_context(|| format!("{}: not a usable CA certificate", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider());
            let verifier = match auth {
                ClientAuth::Optional => verifier.allow_unauthenticated(),
                ClientAuth::Required => verifier,
            };
            builder.with_client_cert_verifier(verifier.build().context("client CA")?)
        }
        (None, _) => builder.with_no_client_auth(),
    };
    let cfg = builder
        .with_single_cert(certs, key)
        .with_context(|| format!("{} with {}", s.cert.display(), s.key.display()))?;
    Ok(Arc::new(cfg))
}

/// The TLS side of one listener: the configuration for new handshakes, reloaded from disk when
/// the files change.
pub struct Tls {
    settings: TlsSettings,
    current: Mutex<(Arc<ServerConfig>, Vec<Stamp>)>,
}

/// What a reload check did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    /// The files have not changed.
    Unchanged,
    /// New files loaded: new handshakes use them.
    Reloaded,
    /// The files changed but do not load; the previous configuration stays.
    Failed,
}

impl Tls {
    /// Loads the files (an error here is a startup error).
    pub fn new(settings: &TlsSettings) -> anyhow::Result<Tls> {
        let stamps = Self::stamps_of(settings);
        let cfg = load(settings)?;
        Ok(Tls {
            settings: settings.clone(),
            current: Mutex::new((cfg, stamps)),
        })
    }

    fn stamps_of(s: &TlsSettings) -> Vec<Stamp> {
        let mut paths: Vec<&PathBuf> = vec![&s.cert, &s.key];
        paths.extend(s.client_ca.as_ref());
        paths.into_iter().map(|p| stamp(p)).collect()
    }

    /// How often the files are checked.
    pub fn reload_interval(&self) -> Duration {
        self.settings.reload_interval
    }

    /// How long a client has to finish its handshake.
    pub fn handshake_timeout(&self) -> Duration {
        self.settings.handshake_timeout
    }

    /// The acceptor for the next connection. Always one: a TLS listener must never fall back
    /// to plain text, so a poisoned lock is recovered rather than treated as "no TLS".
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let g = self.current.lock().unwrap_or_else(|e| e.into_inner());
        tokio_rustls::TlsAcceptor::from(g.0.clone())
    }

    /// Reloads if any file changed since the last attempt.
    pub fn check_reload(&self) -> Reload {
        let stamps = Self::stamps_of(&self.settings);
        let mut g = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if g.1 == stamps {
            return Reload::Unchanged;
        }
        // Remember the attempt either way: a half-written pair is retried when the rest lands.
        g.1 = stamps;
        match load(&self.settings) {
            Ok(cfg) => {
                g.0 = cfg;
                tracing::info!(
                    cert = %self.settings.cert.display(),
                    "TLS certificate reloaded; new connections use it"
                );
                Reload::Reloaded
            }
            Err(e) => {
                tracing::error!(
                    error = format!("{e:#}"),
                    "TLS files changed but do not load; keeping the previous certificate"
                );
                Reload::Failed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(cn: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut p = rcgen::CertificateParams::new(vec!["localhost".into()]).expect("params");
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        (
            p.self_signed(&key).expect("cert").pem(),
            key.serialize_pem(),
        )
    }

    fn replace(path: &Path, text: &str) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, path).expect("rename");
    }

    #[test]
    fn a_half_written_pair_keeps_the_old_certificate_until_the_rest_lands() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = TlsSettings {
            cert: dir.path().join("c.pem"),
            key: dir.path().join("k.pem"),
            client_ca: None,
            client_auth: ClientAuth::Required,
            handshake_timeout: Duration::from_secs(1),
            reload_interval: Duration::from_secs(1),
        };
        let (c1, k1) = pair("one");
        replace(&s.cert, &c1);
        replace(&s.key, &k1);
        let tls = Tls::new(&s).expect("loads");
        assert_eq!(tls.check_reload(), Reload::Unchanged);
        let (c2, k2) = pair("two");
        // The new key lands first: it does not match the old certificate.
        replace(&s.key, &k2);
        assert_eq!(tls.check_reload(), Reload::Failed);
        assert_eq!(
            tls.check_reload(),
            Reload::Unchanged,
            "not retried in a loop"
        );
        replace(&s.cert, &c2);
        assert_eq!(tls.check_reload(), Reload::Reloaded);
        // Garbage in place of the certificate: refused, the running one stays.
        replace(&s.cert, "not a certificate");
        assert_eq!(tls.check_reload(), Reload::Failed);
        assert!(Tls::new(&s).is_err(), "a startup with it fails");
    }
}
