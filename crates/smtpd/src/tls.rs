//! TLS for STARTTLS: rustls with the ring provider only, and a self-signed
//! certificate from rcgen when none is configured.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

use crate::error::SmtpdError;

/// Installs ring as the process-wide rustls provider. Safe to call more than
/// once; call it early in `main` so no other crate installs aws-lc first.
/// The acceptors built here do not depend on it: they name ring explicitly.
pub fn install_ring_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A TLS acceptor from a certificate chain and its private key (DER).
///
/// # Errors
/// [`SmtpdError::Tls`] when rustls refuses the key or chain.
pub fn acceptor(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<TlsAcceptor, SmtpdError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SmtpdError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| SmtpdError::Tls(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A self-signed certificate for `names` (DNS names or IP literals) and an
/// acceptor serving it. The certificate is returned so tests and clients can
/// trust exactly it.
///
/// # Errors
/// [`SmtpdError::Tls`] when generation fails (for example an invalid name).
pub fn self_signed(names: &[&str]) -> Result<(TlsAcceptor, CertificateDer<'static>), SmtpdError> {
    let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
    let certified =
        rcgen::generate_simple_self_signed(names).map_err(|e| SmtpdError::Tls(e.to_string()))?;
    let cert = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    Ok((acceptor(vec![cert.clone()], key)?, cert))
}
