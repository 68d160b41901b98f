//! Kubeconfig files: YAML written by hand, every scalar a JSON string (which YAML reads as a
//! double-quoted scalar), with the CA and the client certificate inlined.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::TestenvError;
use crate::der::base64;
use crate::pki::Identity;

/// The name of the cluster and context in every kubeconfig this crate writes.
pub const CONTEXT: &str = "edgefleet-testenv";

fn quote(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

pub(crate) fn render(server: &str, ca_pem: &str, user: &str, identity: &Identity) -> String {
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: {context}\n\
        \x20 cluster:\n\
        \x20   server: {server}\n\
        \x20   certificate-authority-data: {ca}\n\
         users:\n\
         - name: {user}\n\
        \x20 user:\n\
        \x20   client-certificate-data: {cert}\n\
        \x20   client-key-data: {key}\n\
         contexts:\n\
         - name: {context}\n\
        \x20 context:\n\
        \x20   cluster: {context}\n\
        \x20   user: {user}\n\
         current-context: {context}\n",
        context = quote(CONTEXT),
        server = quote(server),
        ca = quote(&base64(ca_pem.as_bytes())),
        user = quote(user),
        cert = quote(&base64(identity.cert_pem.as_bytes())),
        key = quote(&base64(identity.key_pem.as_bytes())),
    )
}

/// Writes `contents` to a new file readable by its owner only (it holds a private key).
pub(crate) fn write_private(path: &Path, contents: &str) -> Result<(), TestenvError> {
    let io_error = |source| TestenvError::Io {
        what: format!("write {}", path.display()),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_error)?;
    file.write_all(contents.as_bytes()).map_err(io_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_with_colons_are_quoted_and_read_back() -> Result<(), String> {
        let identity = Identity {
            cert_der: vec![],
            cert_pem: "CERT".into(),
            key_der: vec![],
            key_pem: "KEY".into(),
        };
        let text = render(
            "https://127.0.0.1:1",
            "CA",
            "system:serviceaccount:a:b",
            &identity,
        );
        assert!(text.contains("- name: \"system:serviceaccount:a:b\"\n"));
        assert!(text.contains("    user: \"system:serviceaccount:a:b\"\n"));
        assert!(text.contains("    certificate-authority-data: \"Q0E=\"\n"));
        assert!(text.contains("    server: \"https://127.0.0.1:1\"\n"));
        assert!(text.ends_with("current-context: \"edgefleet-testenv\"\n"));

        // Read back with the parser kube-rs uses.
        let parsed: serde_json::Value = serde_saphyr::from_str(&text).map_err(|e| e.to_string())?;
        assert_eq!(
            parsed["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:1"
        );
        assert_eq!(parsed["users"][0]["name"], "system:serviceaccount:a:b");
        assert_eq!(
            parsed["users"][0]["user"]["client-certificate-data"],
            base64(b"CERT")
        );
        assert_eq!(
            parsed["contexts"][0]["context"]["user"],
            "system:serviceaccount:a:b"
        );
        assert_eq!(parsed["current-context"], CONTEXT);
        Ok(())
    }
}
