//! Syslog over TLS (RFC 5425) end to end, with real TLS clients (`socat OPENSSL:`,
//! `openssl s_client`) and certificates made here with rcgen: delivery, mTLS refusals, plain
//! text on the TLS port, certificate reload by file change and by SIGHUP without dropping an
//! established connection, handshake timeout.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    SerialNumber,
};
use support::*;

const WAIT: Duration = Duration::from_secs(60);

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    let cert = p.self_signed(&key).expect("ca");
    Ca { cert, key }
}

/// A leaf signed by `ca`: (cert PEM, key PEM).
fn leaf(ca: &Ca, cn: &str, serial: u64, client: bool) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("params");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.serial_number = Some(SerialNumber::from(serial));
    p.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    let cert = p.signed_by(&key, &ca.cert, &ca.key).expect("sign");
    (cert.pem(), key.serialize_pem())
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write");
}

/// Replaces `path` atomically, as cert-manager or an ACME client would.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    write(&tmp, text);
    std::fs::rename(&tmp, path).expect("rename");
}

struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
}

impl Pki {
    fn new() -> Pki {
        let pki = Pki {
            dir: tempfile::tempdir().expect("tmp"),
            ca: ca("logferry test CA"),
        };
        write(&pki.path("ca.pem"), &pki.ca.cert.pem());
        let (c, k) = leaf(&pki.ca, "logferry-one", 0x1001, false);
        write(&pki.path("server.pem"), &c);
        write(&pki.path("server.key"), &k);
        let (c, k) = leaf(&pki.ca, "good-client", 0x3003, true);
        write(&pki.path("client.pem"), &c);
        write(&pki.path("client.key"), &k);
        let rogue = ca("rogue CA");
        let (c, k) = leaf(&rogue, "rogue-client", 0x6666, true);
        write(&pki.path("rogue.pem"), &c);
        write(&pki.path("rogue.key"), &k);
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn p(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

fn config(port: u16, pki: &Pki, tls_extra: &str, endpoint: &str) -> String {
    let source = format!(
        r#"
[sources.in]
type = "syslog"
address = "tcp://127.0.0.1:{port}"

[sources.in.tls]
cert = "{cert}"
key = "{key}"
{tls_extra}"#,
        cert = pki.p("server.pem"),
        key = pki.p("server.key"),
    );
    let sink = cw_sink(&["in"], "/tls/test", "node", endpoint).format("message");
    pipeline(&source, &sink)
}

/// logferry with a TLS syslog source `in` on a free port, serving a new [`Pki`]'s server
/// certificate, checking clients against its CA with `client_auth` and `tls_extra` lines;
/// shipping to moto and serving `/metrics`. Returns (moto, pki, port, logferry, metrics
/// address) once it listens.
fn start_tls(client_auth: &str, tls_extra: &str) -> (Moto, Pki, u16, Logferry, String) {
    let moto = Moto::start().expect("moto");
    let pki = Pki::new();
    let port = free_port();
    let extra = format!(
        "client_ca = \"{}\"\nclient_auth = \"{client_auth}\"\n{tls_extra}",
        pki.p("ca.pem")
    );
    let (lf, metrics) = start_with_metrics(&config(port, &pki, &extra, &moto.endpoint()));
    lf.wait_listening(1);
    (moto, pki, port, lf, metrics)
}

/// `socat` as a TLS client: sends `data` and closes. `client` is (cert, key) file names.
fn socat_send(port: u16, pki: &Pki, client: Option<(&str, &str)>, data: &[u8]) -> bool {
    let mut addr = format!(
        "OPENSSL:127.0.0.1:{port},cafile={},verify=1",
        pki.p("ca.pem")
    );
    if let Some((c, k)) = client {
        addr.push_str(&format!(",cert={},key={}", pki.p(c), pki.p(k)));
    }
    let mut child = Command::new("socat")
        .args(["-u", "STDIN", &addr])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("socat");
    let _ = child.stdin.take().expect("stdin").write_all(data);
    child.wait().map(|s| s.success()).unwrap_or(false)
}

/// The serial number and subject of the certificate the server presents now, read with
/// `openssl s_client -showcerts` (and `openssl x509`).
fn served_cert(port: u16, pki: &Pki) -> String {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-showcerts",
        ])
        .args(["-CAfile", &pki.p("ca.pem"), "-cert", &pki.p("client.pem")])
        .args(["-key", &pki.p("client.key")])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("openssl s_client");
    let out = output_fed(
        Command::new("openssl").args(["x509", "-noout", "-serial", "-subject"]),
        &out.stdout,
    )
    .expect("openssl x509");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn texts(endpoint: &str) -> Vec<String> {
    events(endpoint, "/tls/test", "node")
        .into_iter()
        .map(|(_, m)| m)
        .collect()
}

#[test]
fn tls_delivers_refuses_strangers_and_reloads_certificates_without_dropping_connections() {
    let (moto, pki, port, lf, metrics) = start_tls("required", "reload_interval = \"300ms\"");
    assert!(served_cert(port, &pki).contains("serial=1001"));

    // A long-lived connection, open across the certificate change below.
    let mut kept = Command::new("socat")
        .args([
            "-u",
            "STDIN",
            &format!(
                "OPENSSL:127.0.0.1:{port},cafile={},cert={},key={},verify=1",
                pki.p("ca.pem"),
                pki.p("client.pem"),
                pki.p("client.key")
            ),
        ])
        .stdin(Stdio::piped())
        .spawn()
        .expect("socat");
    let mut kept_in = kept.stdin.take().expect("stdin");
    kept_in
        .write_all(b"tls kept before reload\n")
        .expect("write");
    kept_in.flush().expect("flush");

    // RFC 5425 framing (octet counting) and newline framing, from two real clients.
    let msg = "<14>1 - h app - - - tls octet counted";
    let framed = format!("{} {msg}", msg.len());
    assert!(socat_send(
        port,
        &pki,
        Some(("client.pem", "client.key")),
        framed.as_bytes()
    ));
    let mut s_client = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-quiet",
        ])
        .args(["-CAfile", &pki.p("ca.pem"), "-cert", &pki.p("client.pem")])
        .args(["-key", &pki.p("client.key"), "-verify_return_error"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_client");
    s_client
        .stdin
        .as_mut()
        .expect("stdin")
        .write_all(b"<13>Nov 25 16:20:39 h app: tls via s_client\n")
        .expect("write");

    // Strangers: plain text on the TLS port, no client certificate, a certificate from
    // another CA. None of it may become an event.
    tcp_send(
        port,
        b"<13>Nov 25 16:20:39 h app: plain text on the tls port\n",
    );
    socat_send(port, &pki, None, b"without a client certificate\n");
    socat_send(
        port,
        &pki,
        Some(("rogue.pem", "rogue.key")),
        b"with a rogue client certificate\n",
    );

    let ok = wait_until(WAIT, || {
        let t = texts(&moto.endpoint());
        [
            "tls octet counted",
            "tls via s_client",
            "tls kept before reload",
        ]
        .iter()
        .all(|w| t.iter().any(|m| m == w))
    });
    assert!(ok, "{:?}\n{}", texts(&moto.endpoint()), lf.log());
    let failed = || {
        metric(
            &metrics,
            "logferry_source_rejected_total",
            &["reason=\"tls_handshake_failed\""],
        )
        .unwrap_or(0.0)
    };
    assert!(
        wait_until(WAIT, || failed() >= 3.0),
        "handshakes refused: {}\n{}",
        failed(),
        lf.log()
    );
    let _ = s_client.kill();
    let _ = s_client.wait();

    // Rotate the certificate; new handshakes see it, the open connection keeps going.
    let (c, k) = leaf(&pki.ca, "logferry-two", 0x2002, false);
    replace(&pki.path("server.key"), &k);
    replace(&pki.path("server.pem"), &c);
    let mut served = String::new();
    let rotated = wait_until(WAIT, || {
        served = served_cert(port, &pki);
        served.contains("serial=2002")
    });
    assert!(rotated, "still served: {served}\n{}", lf.log());
    assert!(served.contains("logferry-two"), "{served}");
    assert!(
        metric(&metrics, "logferry_source_tls_reloads_total", &[]).unwrap_or(0.0) >= 1.0,
        "{}",
        lf.log()
    );
    kept_in
        .write_all(b"tls kept after reload\n")
        .expect("the connection survived the reload");
    drop(kept_in);
    assert!(kept.wait().expect("socat").success());
    assert!(
        wait_until(WAIT, || texts(&moto.endpoint())
            .iter()
            .any(|m| m == "tls kept after reload")),
        "{:?}",
        texts(&moto.endpoint())
    );

    let all = texts(&moto.endpoint());
    for stranger in [
        "plain text on the tls port",
        "without a client certificate",
        "with a rogue client certificate",
    ] {
        assert!(
            !all.iter().any(|m| m.contains(stranger)),
            "`{stranger}` got in: {all:?}"
        );
    }
    assert_eq!(all.len(), 4, "{all:?}");
}

#[test]
fn sighup_rereads_certificates_optional_client_auth_and_handshake_timeout() {
    // Polling is effectively off: only SIGHUP can bring the new certificate in.
    let tls_extra = "reload_interval = \"1h\"\nhandshake_timeout = \"1s\"";
    let (moto, pki, port, lf, metrics) = start_tls("optional", tls_extra);

    // Optional client auth: no certificate is fine, a rogue one is not.
    assert!(socat_send(port, &pki, None, b"anonymous client\n"));
    socat_send(
        port,
        &pki,
        Some(("rogue.pem", "rogue.key")),
        b"rogue client\n",
    );
    assert!(
        wait_until(WAIT, || texts(&moto.endpoint())
            .iter()
            .any(|m| m == "anonymous client")),
        "{}",
        lf.log()
    );

    // A client that connects and never starts the handshake is cut off.
    let idle = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    assert!(
        wait_until(WAIT, || metric(
            &metrics,
            "logferry_source_rejected_total",
            &["reason=\"tls_handshake_timeout\""]
        )
        .unwrap_or(0.0)
            >= 1.0),
        "{}",
        lf.log()
    );
    drop(idle);

    let (c, k) = leaf(&pki.ca, "logferry-hup", 0x4004, false);
    replace(&pki.path("server.key"), &k);
    replace(&pki.path("server.pem"), &c);
    assert!(served_cert(port, &pki).contains("serial=1001"));
    lf.sighup();
    let mut served = String::new();
    assert!(
        wait_until(WAIT, || {
            served = served_cert(port, &pki);
            served.contains("serial=4004")
        }),
        "{served}\n{}",
        lf.log()
    );
    assert!(socat_send(port, &pki, None, b"after sighup\n"));
    assert!(wait_until(WAIT, || texts(&moto.endpoint())
        .iter()
        .any(|m| m == "after sighup")));
    assert!(!texts(&moto.endpoint()).iter().any(|m| m == "rogue client"));
}
