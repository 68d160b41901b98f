//! A minimal HTTP/1.0 client for tests and benchmarks talking to the components' own endpoints
//! (`/readyz`, `/metrics`, the standalone fleet API) on loopback, and a reader of Prometheus text.

use std::io::{Read, Write};
use std::time::Duration;

/// Sends one request to `127.0.0.1:port` and reads the answer to the end: the status code and the
/// body. `(0, "")` while nothing listens there (yet), so callers can poll.
pub fn request(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let sent = write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: test\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if sent.is_err() {
        return (0, String::new());
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// `GET path`.
pub fn get(port: u16, path: &str) -> (u16, String) {
    request(port, "GET", path, "")
}

/// The sum of the samples of metric `name` (Prometheus text) whose labels contain every one of
/// `labels` (e.g. `kind="assign"`); 0 when there are none.
pub fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| line.split(['{', ' ']).next() == Some(name))
        .filter(|line| labels.iter().all(|l| line.contains(l)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_summed_by_name_and_labels() {
        let text = "# TYPE a counter\na_total{kind=\"x\"} 2\na_total{kind=\"y\"} 3\nab_total 7\n";
        assert_eq!(metric(text, "a_total", &[]), 5.0);
        assert_eq!(metric(text, "a_total", &["kind=\"y\""]), 3.0);
        assert_eq!(metric(text, "ab_total", &[]), 7.0);
        assert_eq!(metric(text, "missing", &[]), 0.0);
    }

    #[test]
    fn nothing_listening_is_code_zero() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        assert_eq!(get(port, "/"), (0, String::new()));
    }
}
