//! TLS as production has it, on loopback: a CA made for the test run (rcgen), and a TLS front
//! (tokio-rustls) that terminates HTTPS with a certificate from that CA for `127.0.0.1` and
//! `localhost` and relays the bytes to a plain loopback server (the S3 store, a source server, a
//! webhook receiver, an OTLP receiver). What is under test trusts the CA the way an operator's
//! deployment trusts a private CA: `SSL_CERT_FILE` / `SSL_CERT_DIR` for the binaries, a mounted
//! bundle for the image.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// A CA of the test's own, with a server certificate for loopback.
pub struct TestCa {
    pem: String,
    server: Arc<rustls::ServerConfig>,
    file: PathBuf,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").field("file", &self.file).finish()
    }
}

impl TestCa {
    pub fn new() -> Self {
        let ca_key = KeyPair::generate().expect("a CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.distinguished_name
            .push(DnType::CommonName, "zipkit test CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).expect("the CA certificate");
        let issuer = Issuer::new(ca, ca_key);

        let server_key = KeyPair::generate().expect("a server key");
        let mut server =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("server params");
        server
            .distinguished_name
            .push(DnType::CommonName, "zipkit test server");
        let server_cert = server
            .signed_by(&server_key, &issuer)
            .expect("the server certificate");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
        let chain: Vec<CertificateDer<'static>> =
            vec![server_cert.der().clone(), ca_cert.der().clone()];
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("the server's certificate and key");

        let pem = ca_cert.pem();
        let dir = std::env::temp_dir().join(format!("zipkit-ca-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("a folder for the CA");
        let file = dir.join("ca.crt");
        std::fs::write(&file, &pem).expect("write the CA");
        Self {
            pem,
            server: Arc::new(config),
            file,
        }
    }

    /// The CA certificate (PEM), to trust.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A file holding the CA certificate (for `SSL_CERT_FILE`), readable by anyone.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The variables that make a zipkit binary trust this CA beside the system's public set,
    /// as the Helm chart's `tls.extraCA` does: `SSL_CERT_FILE` keeps the public bundle,
    /// `SSL_CERT_DIR` adds the folder holding this CA.
    pub fn trust_env(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "SSL_CERT_FILE",
                "/etc/ssl/certs/ca-certificates.crt".to_owned(),
            ),
            (
                "SSL_CERT_DIR",
                self.file
                    .parent()
                    .expect("the CA's folder")
                    .display()
                    .to_string(),
            ),
        ]
    }

    /// As `front`, relaying to the server of a plain `http://host:port/...` URL.
    pub async fn front_for(&self, plain_url: &str) -> TlsFront {
        let authority = plain_url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .expect("host:port");
        self.front(authority.to_owned()).await
    }

    /// Starts a TLS front on a free loopback port that relays to `target` (`host:port`). It runs
    /// on a thread of its own, so a test that blocks its runtime (waiting for a CLI process that
    /// talks to the front) does not stall it.
    pub async fn front(&self, target: impl Into<String>) -> TlsFront {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("non-blocking");
        let port = listener.local_addr().expect("address").port();
        let (acceptor, target) = (TlsAcceptor::from(Arc::clone(&self.server)), target.into());
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("tls-front-{port}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the TLS front");
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("a tokio listener");
                    loop {
                        let client = tokio::select! {
                            accepted = listener.accept() => match accepted {
                                Ok((client, _)) => client,
                                Err(_) => return,
                            },
                            _ = &mut stopped => return,
                        };
                        let (acceptor, target) = (acceptor.clone(), target.clone());
                        tokio::spawn(async move {
                            let Ok(mut tls) = acceptor.accept(client).await else {
                                return; // a client that does not trust the CA
                            };
                            let Ok(mut upstream) = TcpStream::connect(&target).await else {
                                return;
                            };
                            let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
                        });
                    }
                });
            })
            .expect("the TLS front's thread");
        TlsFront {
            port,
            stop: Some(stop),
        }
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        if let Some(dir) = self.file.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// HTTPS in front of a plain loopback server; stops when dropped.
#[derive(Debug)]
pub struct TlsFront {
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TlsFront {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `https://127.0.0.1:<port>`
    pub fn origin(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// This front's URL for a plain `http://127.0.0.1:<port>/…` URL of the server behind it.
    pub fn https(&self, plain: &str) -> String {
        let rest = plain
            .strip_prefix("http://")
            .and_then(|r| r.find('/').map(|i| &r[i..]))
            .unwrap_or("/");
        format!("{}{rest}", self.origin())
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
