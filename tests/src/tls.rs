//! A certificate chain for tests (rcgen): a CA, a server certificate for `localhost` and
//! `127.0.0.1` signed by it, and an unrelated CA, written as PEM files the cluster's OS user can
//! read; and the `ssl = on` settings for [`TestCluster::start`](crate::TestCluster::start).

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::path::{Path, PathBuf};

/// The files of a test certificate chain, in a directory removed on drop.
#[derive(Debug)]
pub struct TestCerts {
    dir: PathBuf,
}

fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).expect("CA certificate");
    (cert.pem(), Issuer::new(params, key))
}

impl TestCerts {
    /// Generates the chain into a new directory.
    pub fn generate() -> TestCerts {
        let dir = crate::cluster::tempdir();
        let (ca_pem, issuer) = ca("lease_lock test CA");
        let (other_pem, _) = ca("some other CA");
        let server_key = KeyPair::generate().expect("server key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).expect("server params");
        params.distinguished_name.push(DnType::CommonName, "localhost");
        let server = params.signed_by(&server_key, &issuer).expect("server certificate");
        let certs = TestCerts { dir };
        std::fs::write(certs.ca(), ca_pem).expect("write CA");
        std::fs::write(certs.other_ca(), other_pem).expect("write other CA");
        std::fs::write(certs.dir.join("server.crt"), server.pem()).expect("write server certificate");
        let key = certs.dir.join("server.key");
        std::fs::write(&key, server_key.serialize_pem()).expect("write server key");
        set_mode(&key, 0o600);
        for f in ["ca.crt", "other-ca.crt", "server.crt", "server.key"] {
            crate::cluster::give_to_cluster_user(&certs.dir.join(f));
        }
        certs
    }

    /// The CA that signed the server's certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// A CA that signed nothing here.
    pub fn other_ca(&self) -> PathBuf {
        self.dir.join("other-ca.crt")
    }

    /// Server settings that turn TLS on with the generated certificate.
    pub fn server_settings(&self) -> Vec<String> {
        vec![
            "ssl=on".into(),
            format!("ssl_cert_file={}", self.dir.join("server.crt").display()),
            format!("ssl_key_file={}", self.dir.join("server.key").display()),
        ]
    }
}

impl Drop for TestCerts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}
