//! Certificates for the TLS tests: a CA, a server certificate it signed (IP SAN 127.0.0.1,
//! DNS localhost) and a client certificate, as PEM files in a directory of their own.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tempfile::TempDir;

/// A CA, a server and a client certificate (PEM files).
pub struct Pki {
    dir: TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("sy-tls-")
            .tempdir()
            .unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "switchyard test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        for (name, sans, cn) in [
            ("server", vec!["127.0.0.1", "localhost"], "localhost"),
            ("client", vec![], "switchyard-client"),
        ] {
            let mut params =
                CertificateParams::new(sans.into_iter().map(String::from).collect::<Vec<_>>())
                    .unwrap();
            params.distinguished_name.push(DnType::CommonName, cn);
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &issuer).unwrap();
            std::fs::write(dir.path().join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(
                dir.path().join(format!("{name}-key.pem")),
                key.serialize_pem(),
            )
            .unwrap();
        }
        Pki { dir }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
    /// The server certificate.
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }
    pub fn key(&self) -> PathBuf {
        self.dir.path().join("server-key.pem")
    }
    /// A client certificate (CN `switchyard-client`) and its key.
    pub fn client(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.path().join("client.pem"),
            self.dir.path().join("client-key.pem"),
        )
    }
}
