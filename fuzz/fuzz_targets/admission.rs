//! Fuzzes module admission (`edgefleet_sandbox::admission::admit`), which judges an untrusted
//! module's bytes (validation, ABI section, imports, handler export, memory, tables) and rewrites
//! a module that defines its memory to import it. The first input byte picks the class's memory
//! limit (1 to 32 pages) and a mode; the rest is, by mode:
//!
//! - raw: the module bytes themselves (the seeds are real handler and probe modules);
//! - ABI-shaped: `wasm-smith` input for a valid WebAssembly 2.0 module that may import only what
//!   guest ABI v1 provides and exports exactly `edgefleet_handle: () -> i32`, followed by an
//!   `edgefleet_abi` section that is right, missing, of another version, malformed or duplicated;
//! - free: `wasm-smith` input for a module of any shape and any proposal (`Config` is arbitrary).
//!
//! Properties: nothing panics and the rewrite never fails its own re-check (`RewriteFailed`); an
//! admitted module validates as WebAssembly 2.0, has the digest of the input, is the input itself
//! unless its memory was rewritten, gets memory limits within the module's and the class's, and is
//! admitted again unchanged (idempotence). An ABI-shaped module is admitted exactly when a model
//! says so (right section, one 32-bit unshared memory within the class limit, tables within
//! `MAX_TABLE_ELEMENTS`), and otherwise refused with the error of the first rule it breaks.

#![no_main]

use std::sync::OnceLock;

use edgefleet_guest_abi::{
    ABI_SECTION, ABI_VERSION, HANDLE_EXPORT, HOST_FUNCTIONS, HOST_MODULE, MEMORY_MODULE,
    MEMORY_NAME, ValType as AbiType,
};
use edgefleet_protocol::{ClassLimits, Sha256Digest};
use edgefleet_sandbox::AdmissionError;
use edgefleet_sandbox::admission::{MAX_TABLE_ELEMENTS, admit};
use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use wasm_encoder::{
    CodeSection, CustomSection, EntityType, ExportKind, ExportSection, Function, FunctionSection,
    ImportSection, Instruction, MemoryType, Module, TypeSection, ValType,
};
use wasmparser::{Parser, Payload, Validator, WasmFeatures};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let limits = ClassLimits {
        max_memory_pages: 1 + u32::from(mode / 3) % 32,
        ..ClassLimits::default()
    };
    match mode % 3 {
        0 => {
            let _ = check_admission(rest, &limits);
        }
        1 => {
            let _ = abi_shaped(&mut Unstructured::new(rest), &limits);
        }
        _ => {
            let _ = free(&mut Unstructured::new(rest), &limits);
        }
    }
});

/// What the `edgefleet_abi` custom section of an ABI-shaped module holds.
#[derive(Debug, Arbitrary)]
enum AbiSection {
    Right,
    Missing,
    Version(u32),
    Malformed(Vec<u8>),
    Duplicated,
}

fn abi_shaped(u: &mut Unstructured, limits: &ClassLimits) -> arbitrary::Result<()> {
    let mut config = wasm_smith::Config {
        available_imports: Some(abi_imports().to_vec()),
        exports: Some(handle_export().to_vec()),
        max_memories: 1,
        max_memory32_bytes: u.int_in_range(1..=64)? << 16,
        max_tables: u.int_in_range(0..=2)?,
        max_table_elements: u.int_in_range(0..=2 * MAX_TABLE_ELEMENTS)?,
        max_funcs: 20,
        max_instructions: 200,
        ..wasm_smith::Config::default()
    };
    restrict_to_wasm2(&mut config);
    let module = wasm_smith::Module::new(config, u)?;
    let section: AbiSection = u.arbitrary()?;
    let version = |v: u32| v.to_le_bytes().to_vec();
    let sections = match &section {
        AbiSection::Right => vec![version(ABI_VERSION)],
        AbiSection::Missing => vec![],
        AbiSection::Version(v) => vec![version(*v)],
        AbiSection::Malformed(bytes) => vec![bytes.clone()],
        AbiSection::Duplicated => vec![version(ABI_VERSION); 2],
    };
    let mut wasm = module.to_bytes();
    for data in &sections {
        append_abi_section(&mut wasm, data);
    }
    let expected_section = match &sections[..] {
        [] => Err(AdmissionError::MissingAbiVersion),
        [data] => match <[u8; 4]>::try_from(data.as_slice()).map(u32::from_le_bytes) {
            Err(_) => Err(AdmissionError::MalformedAbiVersion { len: data.len() }),
            Ok(ABI_VERSION) => Ok(()),
            Ok(found) => Err(AdmissionError::WrongAbiVersion {
                found,
                supported: ABI_VERSION,
            }),
        },
        _ => Err(AdmissionError::DuplicateAbiVersion {
            count: sections.len(),
        }),
    };
    let result = check_admission(&wasm, limits);
    let expected = expected_section.and_then(|()| model_memory_and_tables(&wasm, limits));
    match (&result, &expected) {
        (Ok(()), Ok(())) => {}
        (Err(found), Err(wanted)) => {
            assert_eq!(found.to_string(), wanted.to_string(), "{section:?}")
        }
        _ => panic!("admission said {result:?}, the model {expected:?} ({section:?})"),
    }
    Ok(())
}

fn free(u: &mut Unstructured, limits: &ClassLimits) -> arbitrary::Result<()> {
    let mut config = wasm_smith::Config::arbitrary(u)?;
    // Keep generation cheap; shapes and proposals stay arbitrary.
    config.max_funcs = config.max_funcs.min(20);
    config.max_instructions = config.max_instructions.min(200);
    config.max_memory32_bytes = config.max_memory32_bytes.min(64 << 16);
    config.max_memory64_bytes = config.max_memory64_bytes.min(64 << 16);
    let module = wasm_smith::Module::new(config, u)?;
    let mut wasm = module.to_bytes();
    if u.arbitrary()? {
        append_abi_section(&mut wasm, &ABI_VERSION.to_le_bytes());
    }
    let _ = check_admission(&wasm, limits);
    Ok(())
}

/// Admits `wasm` and checks the properties every admitted module has; returns the refusal.
fn check_admission(wasm: &[u8], limits: &ClassLimits) -> Result<(), AdmissionError> {
    let admitted = match admit(wasm, limits) {
        Ok(admitted) => admitted,
        Err(e @ AdmissionError::RewriteFailed { .. }) => panic!("{e}"),
        Err(e) => return Err(e),
    };
    assert_eq!(admitted.sha256, *Sha256Digest::of(wasm).as_bytes());
    if let Err(e) = Validator::new_with_features(WasmFeatures::WASM2).validate_all(&admitted.wasm) {
        panic!("an admitted module does not validate: {e}");
    }
    if !admitted.rewritten_memory {
        assert!(
            admitted.wasm == wasm,
            "the module changed without a rewrite"
        );
    }
    let memory = admitted.memory;
    assert!(memory.min_pages <= memory.max_pages, "{memory:?}");
    assert!(memory.max_pages <= limits.max_memory_pages, "{memory:?}");
    // The rewritten module may be a few bytes longer than the class allows the original to be.
    let roomy = ClassLimits {
        max_module_bytes: u32::MAX,
        ..limits.clone()
    };
    let again = admit(&admitted.wasm, &roomy)
        .unwrap_or_else(|e| panic!("an admitted module is refused the second time: {e}"));
    assert!(
        !again.rewritten_memory,
        "the rewrite left a memory definition"
    );
    assert_eq!(again.memory, memory);
    assert!(
        again.wasm == admitted.wasm,
        "admitting twice changed the module"
    );
    Ok(())
}

/// What admission must say of a valid module with a right ABI section, from its memories and
/// tables alone.
fn model_memory_and_tables(wasm: &[u8], limits: &ClassLimits) -> Result<(), AdmissionError> {
    let mut memories = Vec::new();
    let mut tables = Vec::new();
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.expect("wasm-smith makes valid modules") {
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    if let wasmparser::TypeRef::Memory(ty) = import.expect("valid").ty {
                        memories.push(ty);
                    }
                }
            }
            Payload::MemorySection(reader) => {
                memories.extend(reader.into_iter().map(|m| m.expect("valid")));
            }
            Payload::TableSection(reader) => {
                tables.extend(reader.into_iter().map(|t| t.expect("valid").ty));
            }
            _ => {}
        }
    }
    let memory = match memories[..] {
        [] => return Err(AdmissionError::NoMemory),
        [memory] => memory,
        _ => panic!(
            "wasm-smith made {} memories, configured for 1",
            memories.len()
        ),
    };
    if memory.initial > u64::from(limits.max_memory_pages) {
        return Err(AdmissionError::MemoryTooLarge {
            declared_min: memory.initial,
            class_limit: limits.max_memory_pages,
        });
    }
    match tables.iter().position(|t| t.initial > MAX_TABLE_ELEMENTS) {
        Some(index) => Err(AdmissionError::TableTooLarge {
            index,
            declared_min: tables[index].initial,
            limit: MAX_TABLE_ELEMENTS,
        }),
        None => Ok(()),
    }
}

/// Turns off every proposal past WebAssembly 2.0 (what admission accepts) that `Config` enables.
fn restrict_to_wasm2(config: &mut wasm_smith::Config) {
    config.bulk_memory_enabled = true;
    config.reference_types_enabled = true;
    config.simd_enabled = true;
    config.multi_value_enabled = true;
    config.saturating_float_to_int_enabled = true;
    config.sign_extension_ops_enabled = true;
    config.relaxed_simd_enabled = false;
    config.exceptions_enabled = false;
    config.threads_enabled = false;
    config.tail_call_enabled = false;
    config.gc_enabled = false;
    config.memory64_enabled = false;
    config.extended_const_enabled = false;
    config.custom_page_sizes_enabled = false;
    config.wide_arithmetic_enabled = false;
    config.compact_imports_enabled = false;
}

/// Appends a custom `edgefleet_abi` section holding `data` (custom sections may go anywhere).
fn append_abi_section(wasm: &mut Vec<u8>, data: &[u8]) {
    let mut module = Module::new();
    module.section(&CustomSection {
        name: ABI_SECTION.into(),
        data: data.into(),
    });
    // A module's encoding is its 8-byte header and its sections: keep only the section.
    wasm.extend_from_slice(&module.finish()[8..]);
}

/// A module importing everything guest ABI v1 provides: what an ABI-shaped module may import.
fn abi_imports() -> &'static [u8] {
    static MODULE: OnceLock<Vec<u8>> = OnceLock::new();
    MODULE.get_or_init(|| {
        let wasm_type = |t: &AbiType| match t {
            AbiType::I32 => ValType::I32,
            AbiType::I64 => ValType::I64,
        };
        let mut types = TypeSection::new();
        let mut imports = ImportSection::new();
        for (index, function) in HOST_FUNCTIONS.iter().enumerate() {
            types.ty().function(
                function.params.iter().map(wasm_type),
                function.results.iter().map(wasm_type),
            );
            imports.import(
                HOST_MODULE,
                function.name,
                EntityType::Function(index as u32),
            );
        }
        let memory = MemoryType {
            minimum: 1,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        };
        imports.import(MEMORY_MODULE, MEMORY_NAME, EntityType::Memory(memory));
        let mut module = Module::new();
        module.section(&types).section(&imports);
        module.finish()
    })
}

/// A module exporting only the handler entry point, `edgefleet_handle: () -> i32`.
fn handle_export() -> &'static [u8] {
    static MODULE: OnceLock<Vec<u8>> = OnceLock::new();
    MODULE.get_or_init(|| {
        let mut types = TypeSection::new();
        types.ty().function([], [ValType::I32]);
        let mut functions = FunctionSection::new();
        functions.function(0);
        let mut exports = ExportSection::new();
        exports.export(HANDLE_EXPORT, ExportKind::Func, 0);
        let mut body = Function::new([]);
        body.instruction(&Instruction::I32Const(0));
        body.instruction(&Instruction::End);
        let mut code = CodeSection::new();
        code.function(&body);
        let mut module = Module::new();
        module
            .section(&types)
            .section(&functions)
            .section(&exports)
            .section(&code);
        module.finish()
    })
}
