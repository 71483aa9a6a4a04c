//! libpq's TLS parameters in connection strings: `sslmode` (all six values), `sslrootcert`,
//! `sslcert` and `sslkey`. tokio-postgres knows only `sslmode=disable|prefer|require` and rejects
//! the others ("invalid connection string"), so they are taken out of the string first, in both
//! forms (`key=value ...` and `postgresql://...?key=value`), and applied here: the mode to
//! tokio-postgres, the files to a rustls configuration (the `tls` feature).
//!
//! What each mode checks, as in libpq: `disable` no TLS; `allow` and `prefer` TLS if the server
//! offers it (only with the `tls` feature), certificate not checked; `require` TLS, the
//! certificate checked against `sslrootcert` if one is given (libpq's rule), else not at all;
//! `verify-ca` the chain against `sslrootcert`; `verify-full` the chain and the host name.

use crate::error::Error;
use std::path::PathBuf;

/// libpq's `sslmode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<SslMode, Error> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => return Err(Error::Config(format!("connection string: invalid sslmode {other:?}"))),
        })
    }
}

/// The TLS parameters taken out of a connection string.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TlsParams {
    pub mode: Option<SslMode>,
    pub rootcert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl TlsParams {
    /// Whether any parameter was given.
    #[cfg(feature = "tls")]
    pub fn is_empty(&self) -> bool {
        *self == TlsParams::default()
    }

    fn take(&mut self, key: &str, value: &str) -> Result<bool, Error> {
        match key {
            "sslmode" => self.mode = Some(SslMode::parse(value)?),
            "sslrootcert" => self.rootcert = Some(value.into()),
            "sslcert" => self.cert = Some(value.into()),
            "sslkey" => self.key = Some(value.into()),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The mode in effect: libpq's default is `prefer`.
    pub fn mode(&self) -> SslMode {
        self.mode.unwrap_or(SslMode::Prefer)
    }

    /// The mode as tokio-postgres knows it (it checks no certificate itself).
    pub fn tokio_postgres_mode(&self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as Pg;
        match self.mode() {
            SslMode::Disable => Pg::Disable,
            SslMode::Allow | SslMode::Prefer => Pg::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Pg::Require,
        }
    }
}

/// Splits `conninfo` into what tokio-postgres parses and the TLS parameters.
pub(crate) fn split(conninfo: &str) -> Result<(String, TlsParams), Error> {
    let mut params = TlsParams::default();
    let trimmed = conninfo.trim_start();
    if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
        let Some((base, query)) = trimmed.split_once('?') else {
            return Ok((conninfo.to_owned(), params));
        };
        let mut rest = form_urlencoded::Serializer::new(String::new());
        let mut kept = 0;
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            if !params.take(&key, &value)? {
                rest.append_pair(&key, &value);
                kept += 1;
            }
        }
        let rest = rest.finish();
        return Ok((if kept == 0 { base.to_owned() } else { format!("{base}?{rest}") }, params));
    }
    let mut rest = String::new();
    for (key, value) in key_values(conninfo)? {
        if !params.take(&key, &value)? {
            if !rest.is_empty() {
                rest.push(' ');
            }
            rest.push_str(&key);
            rest.push_str("='");
            rest.push_str(&value.replace('\\', "\\\\").replace('\'', "\\'"));
            rest.push('\'');
        }
    }
    Ok((rest, params))
}

/// libpq's `key = value` syntax: values bare or single-quoted, `\` escaping inside quotes.
fn key_values(conninfo: &str) -> Result<Vec<(String, String)>, Error> {
    let invalid = |why: &str| Error::Config(format!("connection string: {why}"));
    let mut pairs = Vec::new();
    let mut chars = conninfo.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(invalid(&format!("missing \"=\" after {key:?}")));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\'') => break,
                    Some('\\') => value.push(chars.next().ok_or_else(|| invalid("unterminated quoted value"))?),
                    Some(c) => value.push(c),
                    None => return Err(invalid("unterminated quoted value")),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.push(chars.next().ok_or_else(|| invalid("trailing backslash"))?);
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

/// The rustls configuration the parameters ask for; `None` when they ask for no TLS.
#[cfg(feature = "tls")]
pub(crate) fn rustls_config(params: &TlsParams) -> Result<Option<rustls::ClientConfig>, Error> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let config_error = |what: &str, path: &std::path::Path, e: &dyn std::fmt::Display| {
        Error::Config(format!("connection string: {what} {}: {e}", path.display()))
    };
    let mode = params.mode();
    if mode == SslMode::Disable {
        return Ok(None);
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?;
    let roots = match &params.rootcert {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| config_error("sslrootcert", path, &e))? {
                let cert = cert.map_err(|e| config_error("sslrootcert", path, &e))?;
                roots.add(cert).map_err(|e| config_error("sslrootcert", path, &e))?;
            }
            if roots.is_empty() {
                return Err(config_error("sslrootcert", path, &"no certificate in the file"));
            }
            Some(std::sync::Arc::new(roots))
        }
        None if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) => {
            return Err(Error::Config(format!(
                "connection string: sslmode={} needs sslrootcert (the CA certificates to trust)",
                if mode == SslMode::VerifyCa { "verify-ca" } else { "verify-full" }
            )));
        }
        None => None,
    };
    let verifier: std::sync::Arc<dyn rustls::client::danger::ServerCertVerifier> = match roots {
        Some(roots) => {
            let chain_and_name = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| Error::Config(format!("TLS: {e}")))?;
            if mode == SslMode::VerifyFull {
                chain_and_name
            } else {
                // verify-ca, and require with a root certificate (libpq's rule): the chain, not
                // the name.
                std::sync::Arc::new(verify::ChainOnly(chain_and_name))
            }
        }
        // allow, prefer, and require without a root certificate: encryption only, as in libpq.
        None => std::sync::Arc::new(verify::Unchecked(provider)),
    };
    let builder = builder.dangerous().with_custom_certificate_verifier(verifier);
    let config = match (&params.cert, &params.key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| config_error("sslcert", cert, &e))?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| config_error("sslkey", key, &e))?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| config_error("sslcert", cert, &e))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(Error::Config("connection string: sslcert and sslkey go together".into())),
    };
    Ok(Some(config))
}

#[cfg(feature = "tls")]
mod verify {
    //! Certificate checks weaker than rustls's default, for libpq's weaker modes. Signatures
    //! of the handshake are always checked.

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{CertificateError, DigitallySignedStruct, Error, SignatureScheme};
    use std::sync::Arc;

    /// `verify-ca`: the chain up to a trusted root, whatever host name the certificate names.
    #[derive(Debug)]
    pub struct ChainOnly(pub Arc<rustls::client::WebPkiServerVerifier>);

    impl ServerCertVerifier for ChainOnly {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
                Err(Error::InvalidCertificate(
                    CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
                )) => Ok(ServerCertVerified::assertion()),
                other => other,
            }
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.0.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.0.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_verify_schemes()
        }
    }

    /// `allow`, `prefer` and `require` without `sslrootcert`: any certificate (libpq does the
    /// same; use `verify-full` against anyone on the path).
    #[derive(Debug)]
    pub struct Unchecked(pub Arc<rustls::crypto::CryptoProvider>);

    impl ServerCertVerifier for Unchecked {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

/// Whether `error` (from connecting) comes from a certificate or TLS configuration problem,
/// which retrying cannot fix.
pub(crate) fn is_tls_failure(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        #[cfg(feature = "tls")]
        {
            if e.downcast_ref::<rustls::Error>().is_some() {
                return true;
            }
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if io.get_ref().is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some()) {
                    return true;
                }
            }
        }
        next = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_strings_lose_only_the_tls_parameters() {
        let (rest, params) =
            split("host=db port=5432 sslmode=verify-full sslrootcert='/etc/my ca.pem' password='a\\'b' user=x")
                .unwrap();
        assert_eq!(rest, "host='db' port='5432' password='a\\'b' user='x'");
        assert_eq!(params.mode, Some(SslMode::VerifyFull));
        assert_eq!(params.rootcert.as_deref(), Some(std::path::Path::new("/etc/my ca.pem")));
        let pg: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(pg.get_password(), Some(&b"a'b"[..]));
    }

    #[test]
    fn urls_lose_only_the_tls_parameters() {
        let (rest, params) =
            split("postgresql://u@h:5/db?sslmode=verify-ca&application_name=a%20b&sslcert=%2Fc.pem&sslkey=k.pem")
                .unwrap();
        assert_eq!(rest, "postgresql://u@h:5/db?application_name=a+b");
        assert_eq!(params.mode, Some(SslMode::VerifyCa));
        assert_eq!(params.cert.as_deref(), Some(std::path::Path::new("/c.pem")));
        let (rest, params) = split("postgresql://u@h/db?sslmode=require").unwrap();
        assert_eq!((rest.as_str(), params.mode), ("postgresql://u@h/db", Some(SslMode::Require)));
        assert_eq!(split("postgresql://h/db").unwrap(), ("postgresql://h/db".into(), TlsParams::default()));
    }

    #[test]
    fn bad_strings_are_config_errors() {
        for bad in ["host=a sslmode=sometimes", "host", "host='a", "sslmode=verify"] {
            assert!(matches!(split(bad), Err(Error::Config(_))), "{bad}");
        }
    }
}
