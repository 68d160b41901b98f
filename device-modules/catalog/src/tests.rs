//! Every module is what it claims to be: valid WebAssembly, declaring its ABI version, importing and
//! exporting what guest ABI v1 (or, for a hostile module, the rule it breaks) says.

use std::collections::BTreeSet;

use wasmparser::{
    ExternalKind, FuncType, MemoryType, Parser, Payload, TableType, TypeRef, ValType, Validator,
};

use super::*;

mod c_handlers;

/// What the tests look at in a module.
#[derive(Debug, Default)]
struct Module {
    abi: Option<Vec<u8>>,
    /// (module, name, type) of each imported function.
    functions: Vec<(String, String, FuncType)>,
    /// (module, name, type) of each imported memory.
    imported_memories: Vec<(String, String, MemoryType)>,
    /// Imports other than functions and memories.
    other_imports: Vec<(String, String)>,
    defined_memories: Vec<MemoryType>,
    tables: Vec<TableType>,
    /// Exported functions with their types, and the names of other exports.
    exported_functions: Vec<(String, FuncType)>,
    other_exports: Vec<String>,
    start: bool,
}

impl Module {
    fn function_imports(&self, module: &str) -> BTreeSet<&str> {
        self.functions
            .iter()
            .filter(|(m, _, _)| m == module)
            .map(|(_, name, _)| name.as_str())
            .collect()
    }

    fn export(&self, name: &str) -> Option<&FuncType> {
        self.exported_functions
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, ty)| ty)
    }
}

fn inspect(bytes: &[u8]) -> Module {
    Validator::new()
        .validate_all(bytes)
        .expect("a valid module");
    let mut module = Module::default();
    let mut types = Vec::new();
    let mut function_types = Vec::new();
    let mut exports = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.unwrap() {
            Payload::TypeSection(reader) => {
                for ty in reader.into_iter_err_on_gc_types() {
                    types.push(ty.unwrap());
                }
            }
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.unwrap();
                    let (m, n) = (import.module.to_owned(), import.name.to_owned());
                    match import.ty {
                        TypeRef::Func(index) => {
                            let ty = types[index as usize].clone();
                            function_types.push(ty.clone());
                            module.functions.push((m, n, ty));
                        }
                        TypeRef::Memory(ty) => module.imported_memories.push((m, n, ty)),
                        _ => module.other_imports.push((m, n)),
                    }
                }
            }
            Payload::FunctionSection(reader) => {
                for index in reader {
                    function_types.push(types[index.unwrap() as usize].clone());
                }
            }
            Payload::MemorySection(reader) => {
                for memory in reader {
                    module.defined_memories.push(memory.unwrap());
                }
            }
            Payload::TableSection(reader) => {
                for table in reader {
                    module.tables.push(table.unwrap().ty);
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.unwrap();
                    exports.push((export.name.to_owned(), export.kind, export.index));
                }
            }
            Payload::StartSection { .. } => module.start = true,
            Payload::CustomSection(section) if section.name() == "edgefleet_abi" => {
                assert!(module.abi.is_none(), "one edgefleet_abi section");
                module.abi = Some(section.data().to_vec());
            }
            _ => {}
        }
    }
    for (name, kind, index) in exports {
        match kind {
            ExternalKind::Func => module
                .exported_functions
                .push((name, function_types[index as usize].clone())),
            _ => module.other_exports.push(name),
        }
    }
    module
}

fn func(params: &[ValType], results: &[ValType]) -> FuncType {
    FuncType::new(params.iter().copied(), results.iter().copied())
}

/// The host functions of guest ABI v1 and their types (docs/guest-abi.md).
fn abi_v1_functions() -> Vec<(&'static str, FuncType)> {
    use ValType::{I32, I64};
    let copy = func(&[I32, I32], &[I32]);
    let output = func(&[I32, I32], &[]);
    vec![
        ("message", copy.clone()),
        ("device_id", copy.clone()),
        ("channel", copy.clone()),
        ("config", copy.clone()),
        ("state_get", copy),
        ("state_set", output.clone()),
        ("command", output),
        ("publish", func(&[I32, I32, I32, I32], &[])),
        ("log", func(&[I32, I32, I32], &[])),
        ("now_ms", func(&[], &[I64])),
    ]
}

/// The initial memory `.cargo/config.toml` links wasm32 modules with, in 64 KiB pages.
fn configured_initial_pages() -> u64 {
    let config = std::fs::read_to_string(workspace_root().join(".cargo/config.toml")).unwrap();
    let flag = "--initial-memory=";
    let start = config.find(flag).expect("an --initial-memory link flag") + flag.len();
    let bytes: u64 = config[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap();
    assert_eq!(bytes % 65536, 0, "whole pages");
    bytes / 65536
}

fn handler_module(handler: Handler) -> Vec<u8> {
    handler_wasm(handler).unwrap_or_else(|e| panic!("building {}: {e}", handler.name()))
}

#[test]
fn handler_modules_follow_guest_abi_v1() {
    let abi = abi_v1_functions();
    let pages = configured_initial_pages();
    assert_eq!(pages, 1, "handlers fit in one page (docs/guest-abi.md)");
    for handler in Handler::all() {
        let name = handler.name();
        let module = inspect(&handler_module(handler));
        assert_eq!(module.abi.as_deref(), Some(&[1, 0, 0, 0][..]), "{name}");
        for (m, n, ty) in &module.functions {
            assert_eq!(m, "edgefleet_v1", "{name} imports {m}.{n}");
            let expected = abi.iter().find(|(f, _)| f == n);
            assert_eq!(expected.map(|(_, t)| t), Some(ty), "{name} imports {n}");
        }
        assert_eq!(module.other_imports, [], "{name}");
        assert_eq!(module.defined_memories, [], "{name} imports its memory");
        let [(m, n, memory)] = &module.imported_memories[..] else {
            panic!(
                "{name}: one memory import, got {:?}",
                module.imported_memories
            );
        };
        assert_eq!((m.as_str(), n.as_str()), ("env", "memory"), "{name}");
        assert_eq!(memory.initial, pages, "{name}");
        assert!(!memory.memory64 && !memory.shared, "{name}");
        assert_eq!(
            module.export("edgefleet_handle"),
            Some(&func(&[], &[ValType::I32])),
            "{name}"
        );
    }
}

#[test]
fn the_meter_exports_the_compute_benchmark() {
    let module = inspect(&handler_module(Handler::Meter));
    assert_eq!(
        module.export("edgefleet_bench_stats"),
        Some(&func(&[ValType::I32], &[ValType::F64]))
    );
}

#[test]
fn the_thermostat_is_small_and_calls_few_host_functions() {
    let bytes = handler_module(Handler::Thermostat);
    assert!(bytes.len() < 32 * 1024, "{} bytes", bytes.len());
    let module = inspect(&bytes);
    assert_eq!(
        module.function_imports("edgefleet_v1"),
        BTreeSet::from([
            "message",
            "config",
            "state_get",
            "command",
            "state_set",
            "publish"
        ])
    );
}

#[test]
fn a_missing_wasm32_target_is_told_apart_from_other_build_failures() {
    use std::os::unix::process::ExitStatusExt;
    let failed = ExitStatus::from_raw(101 << 8);
    let missing = "error[E0463]: can't find crate for `core`\n  |\n  = note: the `wasm32-unknown-unknown` \
                   target may not be installed\n";
    let error = build_failure(failed, missing.to_owned());
    assert!(matches!(error, BuildError::MissingTarget { .. }));
    assert!(
        error.to_string().contains("run scripts/setup.sh"),
        "{error}"
    );
    let other = build_failure(failed, "error[E0308]: mismatched types".to_owned());
    assert!(matches!(other, BuildError::Cargo { .. }));
    assert!(other.to_string().contains("mismatched types"), "{other}");
}

#[test]
fn the_lists_name_every_wat_file() {
    for (dir, names) in [("hostile", HOSTILE), ("probes", PROBES)] {
        let on_disk: BTreeSet<String> =
            std::fs::read_dir(workspace_root().join("device-modules").join(dir))
                .unwrap()
                .map(|entry| entry.unwrap().path())
                .filter(|path| path.extension().is_some_and(|ext| ext == "wat"))
                .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
                .collect();
        let listed: BTreeSet<String> = names.iter().map(|&n| n.to_owned()).collect();
        assert_eq!(listed, on_disk, "{dir}");
    }
}

#[test]
fn every_wat_module_parses_and_declares_abi_v1_unless_that_is_its_point() {
    for &name in HOSTILE {
        let module = inspect(&hostile_wasm(name));
        let abi = match name {
            "wrong_abi" => Some(vec![2, 0, 0, 0]),
            "no_abi_section" => None,
            _ => Some(vec![1, 0, 0, 0]),
        };
        assert_eq!(module.abi, abi, "{name}");
        assert!(module.export("edgefleet_handle").is_some(), "{name}");
    }
    for &name in PROBES {
        let module = inspect(&probe_wasm(name));
        assert_eq!(module.abi.as_deref(), Some(&[1, 0, 0, 0][..]), "{name}");
        assert_eq!(
            module.export("edgefleet_handle"),
            Some(&func(&[], &[ValType::I32])),
            "{name}"
        );
        let abi = abi_v1_functions();
        for (m, n, ty) in &module.functions {
            assert_eq!(m, "edgefleet_v1", "{name}");
            assert!(
                abi.contains(&(n.as_str(), ty.clone())),
                "{name} imports {n}: {ty}"
            );
        }
    }
}

#[test]
fn hostile_modules_carry_their_violation() {
    let module = |name| inspect(&hostile_wasm(name));
    let memory_min = |name| module(name).imported_memories[0].2.initial;

    assert_eq!(memory_min("big_memory"), 1000);
    assert_eq!(memory_min("state_bomb"), 16);
    assert_eq!(module("huge_table").tables[0].initial, 10_000_000);
    assert!(module("start_loop").start);
    assert_eq!(
        module("unknown_import").function_imports("edgefleet_v1"),
        BTreeSet::from(["launch_missiles"])
    );
    let every_host_function_with_memory: BTreeSet<&str> = abi_v1_functions()
        .into_iter()
        .map(|(name, _)| name)
        .filter(|&name| name != "now_ms")
        .collect();
    assert_eq!(
        module("out_of_bounds_host_calls").function_imports("edgefleet_v1"),
        every_host_function_with_memory
    );
    let wrong_abi = module("wrong_abi");
    assert_eq!(wrong_abi.function_imports("edgefleet_v1"), BTreeSet::new());
    assert_eq!(
        wrong_abi.function_imports("edgefleet_v2"),
        BTreeSet::from(["command"])
    );
}

#[test]
fn own_memory_defines_and_exports_its_memory() {
    let module = inspect(&probe_wasm("own_memory"));
    assert_eq!(module.imported_memories, []);
    assert_eq!(module.defined_memories.len(), 1);
    assert_eq!(module.defined_memories[0].initial, 1);
    assert_eq!(module.other_exports, ["memory"]);
    for &name in PROBES.iter().filter(|&&n| n != "own_memory") {
        let module = inspect(&probe_wasm(name));
        assert_eq!(module.defined_memories, [], "{name}");
        assert_eq!(module.imported_memories.len(), 1, "{name}");
    }
}

#[test]
#[should_panic(expected = "no module named \"echo\" in device-modules/hostile")]
fn an_unknown_hostile_module_is_a_panic_naming_it() {
    hostile_wasm("echo");
}

#[test]
#[should_panic(expected = "no module named \"trap\" in device-modules/probes")]
fn an_unknown_probe_is_a_panic_naming_it() {
    probe_wasm("trap");
}

#[test]
fn handler_names_and_packages() {
    let names: Vec<&str> = Handler::all().into_iter().map(Handler::name).collect();
    assert_eq!(names, ["thermostat", "meter", "lock", "air-quality"]);
    for handler in Handler::all() {
        let manifest = workspace_root()
            .join("device-modules")
            .join(handler.name())
            .join("Cargo.toml");
        let manifest = std::fs::read_to_string(&manifest).unwrap();
        assert!(
            manifest.contains(&format!("name = \"{}\"", handler.package())),
            "{}",
            handler.name()
        );
        assert_eq!(
            handler.artifact(),
            format!("{}.wasm", handler.package().replace('-', "_"))
        );
    }
}

#[test]
fn a_rebuilt_module_is_another_binary_that_still_parses_with_its_build_named() {
    let wasm = probe_wasm(PROBES[0]);
    // A build name long enough that the section's size needs two LEB128 bytes.
    let build = "b".repeat(200);
    let again = rebuilt(&wasm, &build);
    assert_ne!(again, wasm);
    let sections: Vec<(String, Vec<u8>)> = wasmparser::Parser::new(0)
        .parse_all(&again)
        .filter_map(|payload| match payload.expect("the module parses") {
            wasmparser::Payload::CustomSection(c) => {
                Some((c.name().to_string(), c.data().to_vec()))
            }
            _ => None,
        })
        .collect();
    assert!(
        sections.contains(&("edgefleet_build".to_string(), build.into_bytes())),
        "{sections:?}"
    );
}
