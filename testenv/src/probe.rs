//! Readiness probes, over plain sockets: etcd's JSON gateway (HTTP) and kube-apiserver's `/readyz`
//! (HTTPS with the admin client certificate, through rustls with ring, which this installs nowhere
//! process-wide).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::TestenvError;

const IO_TIMEOUT: Duration = Duration::from_secs(2);

fn connect(port: u16) -> Result<TcpStream, String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    Ok(stream)
}

/// Reads until the peer closes (or stops answering); a read error after some bytes is an end
/// (Go closes TLS without always waiting for close_notify to be read).
fn read_response(stream: &mut impl Read) -> Result<String, String> {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(_) if !bytes.is_empty() => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn status_code(response: &str) -> Option<u16> {
    response.split_whitespace().nth(1)?.parse().ok()
}

fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// Whether the etcd serving on `port` is up and is the member named `name` (so that a port taken
/// by another test's etcd in the meantime is not mistaken for ours). `Err` says what was seen.
pub(crate) fn etcd_member(port: u16, name: &str) -> Result<(), String> {
    let mut stream = connect(port)?;
    let request = format!(
        "POST /v3/cluster/member/list HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let response = read_response(&mut stream)?;
    match status_code(&response) {
        Some(200) if body(&response).contains(&format!("\"name\":\"{name}\"")) => Ok(()),
        Some(200) => Err(format!("another etcd answers on port {port}")),
        _ => Err(first_line(&response)),
    }
}

fn first_line(response: &str) -> String {
    response
        .lines()
        .next()
        .unwrap_or("(empty answer)")
        .to_owned()
}

/// TLS client settings for the probes: trust the plane's CA, present the admin certificate.
pub(crate) fn tls_config(
    ca_der: &[u8],
    cert_der: &[u8],
    key_der: &[u8],
) -> Result<Arc<ClientConfig>, TestenvError> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(ca_der.to_vec()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from(cert_der.to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der.to_vec())),
        )?;
    Ok(Arc::new(config))
}

/// `GET /readyz` on the API server at 127.0.0.1:`port`: `Ok` on 200, else what was seen (the
/// failing checks when the server answers).
pub(crate) fn apiserver_ready(port: u16, tls: &Arc<ClientConfig>) -> Result<(), String> {
    let stream = connect(port)?;
    let server = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
    let connection = ClientConnection::new(tls.clone(), server).map_err(|e| e.to_string())?;
    let mut tls_stream = StreamOwned::new(connection, stream);
    let request =
        format!("GET /readyz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    tls_stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let response = read_response(&mut tls_stream)?;
    match status_code(&response) {
        Some(200) => Ok(()),
        _ => {
            let failing: Vec<&str> = body(&response)
                .lines()
                .filter(|l| l.starts_with("[-]"))
                .collect();
            if failing.is_empty() {
                Err(first_line(&response))
            } else {
                Err(format!("{}: {}", first_line(&response), failing.join(", ")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_parsed() {
        let ok = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nok";
        assert_eq!(status_code(ok), Some(200));
        assert_eq!(body(ok), "ok");
        assert_eq!(status_code("garbage"), None);
        assert_eq!(first_line(""), "(empty answer)");
    }

    #[test]
    fn a_closed_port_is_reported() -> Result<(), Box<dyn std::error::Error>> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        assert!(etcd_member(port, "x").is_err());
        Ok(())
    }
}
