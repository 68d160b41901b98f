//! The C SDK (`device-modules/c`): the handlers built from C follow guest ABI v1 like the Rust ones,
//! the headers agree with the Rust SDK, the CBOR header passes its native tests, and a missing
//! toolchain is reported as such.

use std::collections::BTreeSet;

use wasmparser::{Parser, Payload, ValType};

use super::*;

fn c_module(handler: CHandler) -> Vec<u8> {
    c_handler_wasm(handler).unwrap_or_else(|e| panic!("building {}: {e}", handler.name()))
}

fn defined_functions(bytes: &[u8]) -> u32 {
    Parser::new(0)
        .parse_all(bytes)
        .find_map(|payload| match payload.unwrap() {
            Payload::FunctionSection(reader) => Some(reader.count()),
            _ => None,
        })
        .unwrap_or(0)
}

#[test]
fn the_pressure_module_follows_guest_abi_v1_and_stays_small() {
    let bytes = c_module(CHandler::Pressure);
    let module = inspect(&bytes);
    assert_eq!(module.abi.as_deref(), Some(&[1, 0, 0, 0][..]));
    let abi = abi_v1_functions();
    for (m, n, ty) in &module.functions {
        assert_eq!(m, "edgefleet_v1", "imports {m}.{n}");
        let expected = abi.iter().find(|(f, _)| f == n);
        assert_eq!(expected.map(|(_, t)| t), Some(ty), "imports {n}");
    }
    // It calls every host function, so this checks every declaration in edgefleet.h.
    let every: BTreeSet<&str> = abi.iter().map(|(name, _)| *name).collect();
    assert_eq!(module.function_imports("edgefleet_v1"), every);
    assert_eq!(module.other_imports, []);
    assert_eq!(module.defined_memories, [], "imports its memory");
    let [(m, n, memory)] = &module.imported_memories[..] else {
        panic!("one memory import, got {:?}", module.imported_memories);
    };
    assert_eq!((m.as_str(), n.as_str()), ("env", "memory"));
    assert_eq!(
        memory.initial,
        configured_initial_pages(),
        "one page, as the Rust handlers"
    );
    assert!(!memory.memory64 && !memory.shared);
    let [(export, ty)] = &module.exported_functions[..] else {
        panic!("one export, got {:?}", module.exported_functions);
    };
    assert_eq!(export, "edgefleet_handle");
    assert_eq!(ty, &func(&[], &[ValType::I32]));
    assert_eq!(module.other_exports, Vec::<String>::new());
    assert!(!module.start);
    // Measured: 9,050 bytes and 5 functions (the Rust thermostat: 17 KB, 28 functions).
    assert!(bytes.len() < 12 * 1024, "{} bytes", bytes.len());
    let functions = defined_functions(&bytes);
    assert!((1..=8).contains(&functions), "{functions} functions");
}

#[test]
fn a_second_build_in_the_process_is_the_same_module() {
    let first = c_module(CHandler::Pressure);
    assert_eq!(c_module(CHandler::Pressure), first);
    let on_disk = workspace_root().join("target/device-modules/c/pressure.wasm");
    assert_eq!(std::fs::read(on_disk).unwrap(), first);
}

/// The value of `#define NAME value` in `header`.
fn define(header: &str, name: &str) -> i32 {
    let prefix = format!("#define {name} ");
    let line = header
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no #define {name}"));
    line.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn the_c_header_uses_the_rust_sdks_codes_and_levels() {
    use edgefleet_guest::{Level, Reject};
    let header = std::fs::read_to_string(c_sdk_dir().join("include/edgefleet.h")).unwrap();
    assert_eq!(define(&header, "EDGEFLEET_ABI_VERSION"), 1);
    assert_eq!(define(&header, "EF_HANDLED"), 0);
    for (name, reject) in [
        ("EF_REJECT_MESSAGE", Reject::Message),
        ("EF_REJECT_CONFIG", Reject::Config),
        ("EF_REJECT_STATE", Reject::State),
        ("EF_REJECT_OUTPUT", Reject::Output),
    ] {
        assert_eq!(define(&header, name), reject.code(), "{name}");
    }
    for (name, level) in [
        ("EF_LOG_ERROR", Level::Error),
        ("EF_LOG_WARN", Level::Warn),
        ("EF_LOG_INFO", Level::Info),
        ("EF_LOG_DEBUG", Level::Debug),
        ("EF_LOG_TRACE", Level::Trace),
    ] {
        assert_eq!(define(&header, name), level as i32, "{name}");
    }
}

#[test]
fn the_c_cbor_library_passes_its_native_tests() {
    let dir = c_out_dir().unwrap();
    let binary = dir.join(format!("cbor_test.{}", std::process::id()));
    let source = c_sdk_dir().join("tests/cbor_test.c");
    let flags = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic"];
    run_clang(&clang(), &flags, &source, &binary).unwrap_or_else(|e| panic!("{e}"));
    let output = Command::new(&binary).output().unwrap();
    std::fs::remove_file(&binary).unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains(", 0 failures"), "{stdout}");
}

#[test]
fn a_missing_clang_or_wasm_ld_says_what_to_install() {
    let missing = build_c(OsStr::new("/nonexistent/clang"), CHandler::Pressure).unwrap_err();
    assert!(
        matches!(missing, BuildError::MissingClang { .. }),
        "{missing:?}"
    );
    assert!(
        missing.to_string().contains("scripts/setup.sh"),
        "{missing}"
    );

    use std::os::unix::process::ExitStatusExt;
    let failed = ExitStatus::from_raw(1 << 8);
    let source = CHandler::Pressure.source();
    let no_linker = "clang: error: unable to execute command: Executable \"wasm-ld-14\" doesn't \
                     exist!\nclang: error: linker command failed with exit code 1\n";
    let error = clang_failure(&source, failed, no_linker.to_owned());
    assert!(
        matches!(error, BuildError::MissingWasmLd { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("install lld"), "{error}");
    let other = clang_failure(
        &source,
        failed,
        "pressure.c:1:1: error: unknown type".to_owned(),
    );
    assert!(matches!(other, BuildError::Clang { .. }), "{other:?}");
    assert!(other.to_string().contains("unknown type"), "{other}");
    assert!(other.to_string().contains("pressure.c"), "{other}");
}

#[test]
fn every_c_handler_directory_is_listed_and_the_readme_shows_the_build_flags() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(c_sdk_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_dir())
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|name| name != "include" && name != "tests")
        .collect();
    let listed: BTreeSet<String> = CHandler::all()
        .into_iter()
        .map(|h| h.name().to_owned())
        .collect();
    assert_eq!(listed, on_disk);
    for handler in CHandler::all() {
        assert!(handler.source().is_file(), "{}", handler.source().display());
    }
    let readme = std::fs::read_to_string(c_sdk_dir().join("README.md")).unwrap();
    for flag in C_FLAGS {
        assert!(readme.contains(flag), "README.md lacks {flag}");
    }
}

#[test]
fn the_readmes_example_handler_builds_and_follows_the_abi() {
    let readme = std::fs::read_to_string(c_sdk_dir().join("README.md")).unwrap();
    let start = readme.find("```c\n").expect("a C example") + "```c\n".len();
    let example = &readme[start..start + readme[start..].find("```").unwrap()];
    let dir = c_out_dir().unwrap();
    let source = dir.join(format!("readme_example.{}.c", std::process::id()));
    let out = source.with_extension("wasm");
    std::fs::write(&source, example).unwrap();
    let built = run_clang(&clang(), C_FLAGS, &source, &out);
    std::fs::remove_file(&source).unwrap();
    built.unwrap_or_else(|e| panic!("{e}"));
    let bytes = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    let module = inspect(&bytes);
    assert_eq!(module.abi.as_deref(), Some(&[1, 0, 0, 0][..]));
    assert_eq!(
        module.function_imports("edgefleet_v1"),
        BTreeSet::from(["message", "command"])
    );
    assert_eq!(
        module.export("edgefleet_handle"),
        Some(&func(&[], &[ValType::I32]))
    );
}
