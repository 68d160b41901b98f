//! Running the real `edgefleet` binary.

#![allow(dead_code)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// The outcome of one run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics unless the command exited with 0.
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Panics unless the command exited with `code`.
    #[track_caller]
    pub fn fails(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Runs `edgefleet args…` in `cwd`.
pub fn edgefleet(cwd: &Path, args: &[&str]) -> Run {
    edgefleet_with(cwd, args, &[], None)
}

/// Runs `edgefleet args…` in `cwd` with the variables `env` (and none of the caller's
/// `EDGEFLEET_*`, `KUBECONFIG` or `HOME`), `stdin` as its standard input.
pub fn edgefleet_with(cwd: &Path, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_edgefleet"));
    command
        .args(args)
        .current_dir(cwd)
        .env_remove("EDGEFLEET_PKI_DIR")
        .env_remove("EDGEFLEET_SERVER")
        .env_remove("EDGEFLEET_REGISTRY_PASSWORD")
        .env_remove("KUBECONFIG")
        // No ~/.kube/config of the machine's.
        .env("HOME", cwd)
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("run edgefleet");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(text.as_bytes()).unwrap();
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("run edgefleet");
    Run {
        code: status.code().expect("exited"),
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}

/// The rows of a table as printed (columns separated by two or more spaces), header first.
pub fn table_rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|line| {
            line.split("  ")
                .map(str::trim)
                .filter(|cell| !cell.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .collect()
}

/// The cell of `column` (a header) in the row whose first cell is `name`.
pub fn cell(text: &str, name: &str, column: &str) -> Option<String> {
    let rows = table_rows(text);
    let header = rows.first()?;
    let index = header.iter().position(|h| h == column)?;
    rows.iter()
        .skip(1)
        .find(|row| row.first().map(String::as_str) == Some(name))
        .and_then(|row| row.get(index).cloned())
}

/// The value of the first `label:  value` line of `text`.
pub fn field(text: &str, label: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let rest = line.trim_start().strip_prefix(label)?.strip_prefix(':')?;
        Some(rest.trim().to_owned())
    })
}
