//! TLS set-up, built once per sender: lettre's parameters for STARTTLS and
//! our own rustls connector for implicit TLS (`smtps://`), both on the ring
//! provider. Neither touches rustls' process-wide default provider, so no
//! provider has to be installed and none can clash.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use lettre::transport::smtp::client::{AsyncTokioStream, TlsParameters};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::error::SendError;

/// What a connection needs to secure itself.
#[derive(Clone)]
pub(crate) struct TlsSetup {
    /// For STARTTLS, handed to lettre.
    pub starttls: TlsParameters,
    /// For implicit TLS.
    pub implicit: tokio_rustls::TlsConnector,
}

pub(crate) fn setup(
    host: &str,
    dangerous_accept_invalid_certs: bool,
) -> Result<TlsSetup, SendError> {
    let tls_err = |detail: String| SendError::Tls {
        host: host.to_owned(),
        detail,
    };
    let starttls = TlsParameters::builder(host.to_owned())
        .dangerous_accept_invalid_certs(dangerous_accept_invalid_certs)
        // "Any certificate" includes one for another name (the implicit-TLS
        // connector below accepts those too); lettre checks names apart.
        .dangerous_accept_invalid_hostnames(dangerous_accept_invalid_certs)
        .build_rustls()
        .map_err(|e| tls_err(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(e.to_string()))?;
    let config = if dangerous_accept_invalid_certs {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
            .with_no_client_auth()
    } else {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(TlsSetup {
        starttls,
        implicit: tokio_rustls::TlsConnector::from(Arc::new(config)),
    })
}

/// Opens implicit TLS over `tcp`.
pub(crate) async fn wrap(
    setup: &TlsSetup,
    host: &str,
    tcp: TcpStream,
) -> Result<TlsTcp, SendError> {
    let name = ServerName::try_from(host.to_owned()).map_err(|e| SendError::Tls {
        host: host.to_owned(),
        detail: format!("`{host}` is not a valid TLS server name: {e}"),
    })?;
    let stream = setup
        .implicit
        .connect(name, tcp)
        .await
        .map_err(|e| SendError::Tls {
            host: host.to_owned(),
            detail: e.to_string(),
        })?;
    Ok(TlsTcp(stream))
}

/// Accepts every certificate; signatures are still checked so the
/// handshake itself is sound. Only behind `dangerous_accept_invalid_certs`.
#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS stream lettre can drive as if it were plain TCP (it only sees
/// [`AsyncTokioStream`]).
pub(crate) struct TlsTcp(tokio_rustls::client::TlsStream<TcpStream>);

impl fmt::Debug for TlsTcp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsTcp")
    }
}

impl AsyncRead for TlsTcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsTcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for TlsTcp {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}
