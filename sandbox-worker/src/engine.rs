//! The WasmEdge side of the sandbox: AOT compilation, and one fresh instance per interaction.
//!
//! Only sandbox worker processes use this module; the supervisor never loads WasmEdge.
//!
//! Why it is written against the C API (`wasmedge_sys::ffi`) rather than the SDK: the hot path is
//! "zero the memory, instantiate, call, delete" and the SDK allocates names and vectors on each step.
//! Per loaded module the worker keeps one configuration, one loaded (AOT) AST, one store + executor
//! and one import module holding the host functions and the *host-owned linear memory* that the module
//! imports. Each interaction then zeroes that memory (the module's initial image is re-applied by
//! instantiation), instantiates the module anonymously, calls `edgefleet_handle` and deletes the
//! instance: no linear memory, global or table survives, and no 12 GiB memory reservation is made
//! per interaction. When a guest grew its memory the whole runtime part is rebuilt, so that not even
//! the memory size leaks into the next interaction.

use std::ffi::{CStr, CString, c_void};
use std::path::Path;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};

use edgefleet_protocol::ClassLimits;
use thiserror::Error;
use wasmedge_sys::ffi;

use edgefleet_guest_abi::{
    HANDLE_EXPORT, HOST_FUNCTIONS, HOST_MODULE, HostFunction, MAX_LOG_LINE_BYTES, MAX_LOG_LINES,
    MEMORY_MODULE, MEMORY_NAME, ValType,
};
use edgefleet_sandbox::admission::MemoryLimits;
use edgefleet_sandbox::{
    Interaction, InteractionError, LogLevel, LogLine, MAX_TOPIC_BYTES, Outcome, Upstream,
};

const PAGE: u64 = 64 * 1024;

/// Failures of the engine itself (compiling, loading), as opposed to an interaction's failure.
#[derive(Debug, Error)]
pub enum EngineError {
    #[error("WasmEdge could not {action}: {message}")]
    WasmEdge {
        action: &'static str,
        message: String,
    },
    #[error("path {0:?} is not valid UTF-8 without NUL bytes")]
    BadPath(std::path::PathBuf),
}

/// The WasmEdge version this process is linked against.
pub fn wasmedge_version() -> String {
    // SAFETY: WasmEdge returns a static NUL-terminated string.
    unsafe { CStr::from_ptr(ffi::WasmEdge_VersionGet()) }
        .to_string_lossy()
        .into_owned()
}

/// Turns off WasmEdge's own logging: it writes every trap to stderr, and the sandbox reports traps
/// as typed errors instead.
pub fn quiet_logs() {
    // SAFETY: plain global setting.
    unsafe { ffi::WasmEdge_LogOff() }
}

fn check(action: &'static str, result: ffi::WasmEdge_Result) -> Result<(), EngineError> {
    // SAFETY: WasmEdge_Result is a plain value.
    if unsafe { ffi::WasmEdge_ResultOK(result) } {
        Ok(())
    } else {
        Err(EngineError::WasmEdge {
            action,
            message: result_message(result),
        })
    }
}

fn result_message(result: ffi::WasmEdge_Result) -> String {
    // SAFETY: returns a static NUL-terminated string for any result.
    unsafe { CStr::from_ptr(ffi::WasmEdge_ResultGetMessage(result)) }
        .to_string_lossy()
        .into_owned()
}

fn wasm_string(s: &'static str) -> ffi::WasmEdge_String {
    // SAFETY: wraps a 'static buffer without copying; WasmEdge only reads it.
    unsafe { ffi::WasmEdge_StringWrap(s.as_ptr().cast(), s.len() as u32) }
}

fn c_path(path: &Path) -> Result<CString, EngineError> {
    path.to_str()
        .and_then(|s| CString::new(s).ok())
        .ok_or_else(|| EngineError::BadPath(path.to_path_buf()))
}

/// An owned `WasmEdge_ConfigureContext`.
struct Configure(*mut ffi::WasmEdge_ConfigureContext);

impl Configure {
    fn new() -> Configure {
        // SAFETY: creation has no preconditions; the result is owned here and deleted in Drop.
        Configure(unsafe { ffi::WasmEdge_ConfigureCreate() })
    }
}

impl Drop for Configure {
    fn drop(&mut self) {
        // SAFETY: owned, deleted once.
        unsafe { ffi::WasmEdge_ConfigureDelete(self.0) }
    }
}

/// AOT-compiles an admitted module to a native shared object at `out`.
///
/// Runs in a short-lived compile process: LLVM's memory and any compiler bug stay out of the workers,
/// and the supervisor can kill a compile that takes too long.
pub fn compile(wasm: &[u8], out: &Path) -> Result<(), EngineError> {
    let conf = Configure::new();
    let out = c_path(out)?;
    // SAFETY: every context is created, used and deleted here; `wasm` outlives the call.
    unsafe {
        ffi::WasmEdge_ConfigureCompilerSetOptimizationLevel(
            conf.0,
            ffi::WasmEdge_CompilerOptimizationLevel_O2,
        );
        ffi::WasmEdge_ConfigureCompilerSetOutputFormat(
            conf.0,
            ffi::WasmEdge_CompilerOutputFormat_Native,
        );
        let compiler = ffi::WasmEdge_CompilerCreate(conf.0);
        let bytes = ffi::WasmEdge_BytesWrap(wasm.as_ptr(), wasm.len() as u32);
        let result = ffi::WasmEdge_CompilerCompileFromBytes(compiler, bytes, out.as_ptr());
        ffi::WasmEdge_CompilerDelete(compiler);
        check("compile the module", result)
    }
}

/// Loads and validates an AOT artefact made by [`compile`], with `conf` switched to AOT run mode
/// (without it WasmEdge 0.17 ignores the native code). The caller owns the returned AST.
fn load_aot(
    conf: &Configure,
    artefact: &Path,
) -> Result<*mut ffi::WasmEdge_ASTModuleContext, EngineError> {
    let path = c_path(artefact)?;
    let mut ast = ptr::null_mut();
    // SAFETY: loader and validator are created and deleted here; the AST is deleted here on failure
    // and handed to the caller on success.
    unsafe {
        ffi::WasmEdge_ConfigureSetRunMode(conf.0, ffi::WasmEdge_RunMode_AOT);
        let loader = ffi::WasmEdge_LoaderCreate(conf.0);
        let result = ffi::WasmEdge_LoaderParseFromFile(loader, &mut ast, path.as_ptr());
        ffi::WasmEdge_LoaderDelete(loader);
        check("load the AOT artefact", result)?;
        let validator = ffi::WasmEdge_ValidatorCreate(conf.0);
        let result = ffi::WasmEdge_ValidatorValidate(validator, ast);
        ffi::WasmEdge_ValidatorDelete(validator);
        if let Err(e) = check("validate the module", result) {
            ffi::WasmEdge_ASTModuleDelete(ast);
            return Err(e);
        }
    }
    Ok(ast)
}

/// A module loaded into this worker, ready to run interactions, each in a fresh instance.
pub struct LoadedModule {
    conf: Configure,
    ast: *mut ffi::WasmEdge_ASTModuleContext,
    runtime: Option<Runtime>,
    memory: MemoryLimits,
    /// Boxed so that its address, handed to WasmEdge as host data, stays put.
    host: Box<HostState>,
}

/// Store, executor and the import module (host functions + memory): rebuilt when a guest grows memory.
struct Runtime {
    store: *mut ffi::WasmEdge_StoreContext,
    executor: *mut ffi::WasmEdge_ExecutorContext,
    imports: Vec<*mut ffi::WasmEdge_ModuleInstanceContext>,
    memory: *mut ffi::WasmEdge_MemoryInstanceContext,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // SAFETY: all owned by this runtime and deleted once; the memory belongs to an import module.
        unsafe {
            ffi::WasmEdge_StoreDelete(self.store);
            ffi::WasmEdge_ExecutorDelete(self.executor);
            for module in &self.imports {
                ffi::WasmEdge_ModuleInstanceDelete(*module);
            }
        }
    }
}

impl Drop for LoadedModule {
    fn drop(&mut self) {
        self.runtime = None;
        // SAFETY: owned, deleted once, after every instance that used it.
        unsafe { ffi::WasmEdge_ASTModuleDelete(self.ast) }
    }
}

impl LoadedModule {
    /// Loads an AOT artefact made by [`compile`] and prepares its runtime.
    pub fn load(
        artefact: &Path,
        memory: MemoryLimits,
        limits: ClassLimits,
        config: Vec<u8>,
    ) -> Result<LoadedModule, EngineError> {
        let conf = Configure::new();
        // SAFETY: plain setting on a configuration owned here.
        unsafe { ffi::WasmEdge_ConfigureSetMaxMemoryPage(conf.0, u64::from(memory.max_pages)) };
        let ast = load_aot(&conf, artefact)?;
        let mut module = LoadedModule {
            conf,
            ast,
            runtime: None,
            memory,
            host: Box::new(HostState::new(limits, config)),
        };
        let host: *mut HostState = &mut *module.host;
        module.runtime = Some(build_runtime(&module.conf, memory, host)?);
        Ok(module)
    }
    /// Runs one interaction in a fresh instance of the module.
    pub fn run(&mut self, interaction: &Interaction) -> Result<Outcome, InteractionError> {
        let (store, executor, memory) = self.runtime()?;
        let pages = u64::from(self.memory.min_pages);
        // SAFETY: the memory has exactly `pages` pages (a grown memory is replaced below), so the
        // pointer covers pages * PAGE bytes; nothing else uses it during this call.
        unsafe {
            let base = ffi::WasmEdge_MemoryInstanceGetPointer(memory, 0, pages * PAGE);
            if !base.is_null() {
                ptr::write_bytes(base, 0, (pages * PAGE) as usize);
            }
        }
        self.host.begin(interaction, memory);
        let code = self.instantiate_and_call(store, executor);
        let outcome = self.host.finish();
        // SAFETY: the memory stays valid while its runtime exists.
        if unsafe { ffi::WasmEdge_MemoryInstanceGetPageSize(memory) } != pages {
            // Not even the size of memory may outlive the interaction: start over with a new one.
            self.runtime = None;
        }
        settle(outcome, code)
    }

    fn instantiate_and_call(
        &self,
        store: *mut ffi::WasmEdge_StoreContext,
        executor: *mut ffi::WasmEdge_ExecutorContext,
    ) -> Result<i32, InteractionError> {
        let instance = Instance::new(executor, store, self.ast)?;
        instance.call_handle(executor)
    }

    /// One instance kept across calls, with its memory never reset: the baseline that the
    /// fresh-instance design is measured against in the benchmark. Not for serving devices.
    pub fn warm_instance(&mut self) -> Result<WarmInstance<'_>, InteractionError> {
        let (store, executor, memory) = self.runtime()?;
        let instance = Instance::new(executor, store, self.ast)?;
        Ok(WarmInstance {
            module: self,
            instance,
            executor,
            memory,
        })
    }

    fn runtime(
        &mut self,
    ) -> Result<
        (
            *mut ffi::WasmEdge_StoreContext,
            *mut ffi::WasmEdge_ExecutorContext,
            *mut ffi::WasmEdge_MemoryInstanceContext,
        ),
        InteractionError,
    > {
        let runtime = match &self.runtime {
            Some(runtime) => runtime,
            None => {
                let host: *mut HostState = &mut *self.host;
                let runtime = build_runtime(&self.conf, self.memory, host).map_err(|e| {
                    InteractionError::Unavailable {
                        detail: e.to_string(),
                    }
                })?;
                self.runtime.insert(runtime)
            }
        };
        Ok((runtime.store, runtime.executor, runtime.memory))
    }
}

/// A module instance, deleted on drop.
struct Instance(*mut ffi::WasmEdge_ModuleInstanceContext);

impl Instance {
    fn new(
        executor: *mut ffi::WasmEdge_ExecutorContext,
        store: *mut ffi::WasmEdge_StoreContext,
        ast: *const ffi::WasmEdge_ASTModuleContext,
    ) -> Result<Instance, InteractionError> {
        let mut instance = ptr::null_mut();
        // SAFETY: executor, store and AST belong to the calling module; the instance is owned by
        // the returned value.
        let result =
            unsafe { ffi::WasmEdge_ExecutorInstantiate(executor, &mut instance, store, ast) };
        let instance = Instance(instance);
        if ok(result) {
            Ok(instance)
        } else {
            Err(trap("instantiation", result))
        }
    }

    fn call_handle(
        &self,
        executor: *mut ffi::WasmEdge_ExecutorContext,
    ) -> Result<i32, InteractionError> {
        let [ret] = self.call(executor, HANDLE_EXPORT, &[])?;
        // SAFETY: plain value accessor.
        Ok(unsafe { ffi::WasmEdge_ValueGetI32(ret) })
    }

    /// Calls an export with i32 arguments and one result.
    fn call(
        &self,
        executor: *mut ffi::WasmEdge_ExecutorContext,
        export: &'static str,
        args: &[i32],
    ) -> Result<[ffi::WasmEdge_Value; 1], InteractionError> {
        // SAFETY: the function belongs to this live instance; WasmEdge checks the argument and
        // result counts against the function's type.
        unsafe {
            let func = ffi::WasmEdge_ModuleInstanceFindFunction(self.0, wasm_string(export));
            if func.is_null() {
                return Err(InteractionError::Trap {
                    message: format!("the module exports no {export}"),
                });
            }
            let params: Vec<_> = args.iter().map(|&a| ffi::WasmEdge_ValueGenI32(a)).collect();
            let mut ret = [ffi::WasmEdge_ValueGenI32(0)];
            let result = ffi::WasmEdge_ExecutorInvoke(
                executor,
                func,
                params.as_ptr(),
                params.len() as u32,
                ret.as_mut_ptr(),
                1,
            );
            if ok(result) {
                Ok(ret)
            } else {
                Err(trap(export, result))
            }
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: owned, deleted once.
            unsafe { ffi::WasmEdge_ModuleInstanceDelete(self.0) }
        }
    }
}

fn ok(result: ffi::WasmEdge_Result) -> bool {
    // SAFETY: plain value accessor.
    unsafe { ffi::WasmEdge_ResultOK(result) }
}

fn trap(stage: &str, result: ffi::WasmEdge_Result) -> InteractionError {
    InteractionError::Trap {
        message: format!("{stage}: {}", result_message(result)),
    }
}

/// See [`LoadedModule::warm_instance`].
pub struct WarmInstance<'m> {
    module: &'m mut LoadedModule,
    instance: Instance,
    executor: *mut ffi::WasmEdge_ExecutorContext,
    memory: *mut ffi::WasmEdge_MemoryInstanceContext,
}

impl WarmInstance<'_> {
    /// Runs an interaction on the kept instance (no reset of any kind).
    pub fn run(&mut self, interaction: &Interaction) -> Result<Outcome, InteractionError> {
        self.module.host.begin(interaction, self.memory);
        let code = self.instance.call_handle(self.executor);
        let outcome = self.module.host.finish();
        settle(outcome, code)
    }

    /// Calls an export `(i32) -> f64`, e.g. a compute kernel (no host state is set up).
    pub fn call_f64(&mut self, export: &'static str, arg: i32) -> Result<f64, InteractionError> {
        let [ret] = self.instance.call(self.executor, export, &[arg])?;
        // SAFETY: plain value accessor.
        Ok(unsafe { ffi::WasmEdge_ValueGetF64(ret) })
    }
}

/// Combines what the host functions recorded with how the handler returned.
fn settle(
    outcome: Result<Outcome, InteractionError>,
    code: Result<i32, InteractionError>,
) -> Result<Outcome, InteractionError> {
    match (outcome, code) {
        (Err(violation), _) => Err(violation),
        (Ok(_), Err(trap)) => Err(trap),
        (Ok(outcome), Ok(0)) => Ok(outcome),
        (Ok(_), Ok(code)) => Err(InteractionError::Rejected { code }),
    }
}

/// Builds the store, executor and import modules (host functions + a fresh memory) for a module.
fn build_runtime(
    conf: &Configure,
    memory_limits: MemoryLimits,
    host: *mut HostState,
) -> Result<Runtime, EngineError> {
    // SAFETY: contexts are created here and owned by the returned Runtime (deleted in its Drop,
    // also on the error paths below); `host` outlives the runtime (both owned by self).
    unsafe {
        let mut runtime = Runtime {
            store: ffi::WasmEdge_StoreCreate(),
            executor: ffi::WasmEdge_ExecutorCreate(conf.0, ptr::null_mut()),
            imports: Vec::with_capacity(2),
            memory: ptr::null_mut(),
        };
        let env = ffi::WasmEdge_ModuleInstanceCreate(wasm_string(MEMORY_MODULE));
        runtime.imports.push(env);
        let limit = ffi::WasmEdge_LimitCreateWithMax(
            u64::from(memory_limits.min_pages),
            u64::from(memory_limits.max_pages),
            false,
            false,
        );
        let memory_type = ffi::WasmEdge_MemoryTypeCreate(limit);
        ffi::WasmEdge_LimitDelete(limit);
        let memory = ffi::WasmEdge_MemoryInstanceCreate(memory_type);
        ffi::WasmEdge_MemoryTypeDelete(memory_type);
        if memory.is_null() {
            return Err(EngineError::WasmEdge {
                action: "create the linear memory",
                message: format!("{} pages", memory_limits.min_pages),
            });
        }
        ffi::WasmEdge_ModuleInstanceAddMemory(env, wasm_string(MEMORY_NAME), memory);
        runtime.memory = memory;

        let abi = ffi::WasmEdge_ModuleInstanceCreate(wasm_string(HOST_MODULE));
        runtime.imports.push(abi);
        for f in HOST_FUNCTIONS {
            let Some(func) = implementation(f.name) else {
                return Err(EngineError::WasmEdge {
                    action: "provide the host functions",
                    message: format!("no implementation of {}", f.name),
                });
            };
            let ty = function_type(f);
            let func = ffi::WasmEdge_FunctionInstanceCreate(ty, Some(func), host.cast(), 0);
            ffi::WasmEdge_FunctionTypeDelete(ty);
            ffi::WasmEdge_ModuleInstanceAddFunction(abi, wasm_string(f.name), func);
        }
        for module in [env, abi] {
            check(
                "register the host module",
                ffi::WasmEdge_ExecutorRegisterImport(runtime.executor, runtime.store, module),
            )?;
        }
        Ok(runtime)
    }
}

/// What the host functions see of the current interaction.
struct HostState {
    limits: ClassLimits,
    config: Vec<u8>,
    /// The interaction being run; only set (and only dereferenced) inside [`LoadedModule::run`].
    interaction: *const Interaction,
    memory: *mut ffi::WasmEdge_MemoryInstanceContext,
    outcome: Outcome,
    outputs: u32,
    violation: Option<InteractionError>,
}

impl HostState {
    fn new(limits: ClassLimits, config: Vec<u8>) -> HostState {
        HostState {
            limits,
            config,
            interaction: ptr::null(),
            memory: ptr::null_mut(),
            outcome: Outcome::default(),
            outputs: 0,
            violation: None,
        }
    }

    fn begin(
        &mut self,
        interaction: &Interaction,
        memory: *mut ffi::WasmEdge_MemoryInstanceContext,
    ) {
        self.interaction = interaction;
        self.memory = memory;
        self.outputs = 0;
        self.violation = None;
    }

    fn finish(&mut self) -> Result<Outcome, InteractionError> {
        self.interaction = ptr::null();
        let outcome = std::mem::take(&mut self.outcome);
        match self.violation.take() {
            Some(violation) => Err(violation),
            None => Ok(outcome),
        }
    }

    fn interaction(&self) -> &Interaction {
        // SAFETY: host functions run only inside `LoadedModule::run`, which set this pointer to an
        // interaction that outlives the call.
        unsafe { &*self.interaction }
    }

    /// Guest memory `[ptr, ptr + len)` for the host function `what`, or a trap when `len` is
    /// negative or the range is not inside memory (docs/guest-abi.md). `ptr` is an unsigned offset
    /// (a wasm32 address is the i32's bit pattern); the end is computed in 64 bits, so `ptr + len`
    /// cannot wrap around, and a zero-length range must still start inside memory (or at its end),
    /// as for WebAssembly's own bulk-memory instructions.
    #[allow(clippy::mut_from_ref)] // the memory belongs to WasmEdge, not to HostState: see SAFETY
    fn guest(&self, what: &str, ptr: i32, len: i32) -> Result<&mut [u8], InteractionError> {
        let Ok(len) = u32::try_from(len) else {
            return Err(InteractionError::Trap {
                message: format!("{what}: negative length {len}"),
            });
        };
        let offset = u64::from(ptr as u32);
        // SAFETY: plain accessor; the memory is the running interaction's (set by `begin`).
        let size = unsafe { ffi::WasmEdge_MemoryInstanceGetPageSize(self.memory) } * PAGE;
        let outside = || InteractionError::Trap {
            message: format!(
                "{what}: memory range {offset}+{len} is outside the {size}-byte memory"
            ),
        };
        if offset + u64::from(len) > size {
            return Err(outside());
        }
        if len == 0 {
            return Ok(&mut []);
        }
        // SAFETY: the range is inside the memory's current size (checked above, and WasmEdge checks
        // it again, returning NULL when it does not fit); the slice is used before control returns
        // to the guest, so the memory cannot grow (move) or go away meanwhile.
        let base =
            unsafe { ffi::WasmEdge_MemoryInstanceGetPointer(self.memory, offset, u64::from(len)) };
        if base.is_null() {
            return Err(outside());
        }
        // SAFETY: see above.
        Ok(unsafe { std::slice::from_raw_parts_mut(base, len as usize) })
    }

    /// The "copy" convention: checks the whole buffer `[ptr, ptr + cap)` first, then returns the
    /// value's length (`-1` for an absent value) and copies the value only when it fits in `cap`.
    fn copy_out(
        &self,
        what: &str,
        value: Option<&[u8]>,
        ptr: i32,
        cap: i32,
    ) -> Result<i32, InteractionError> {
        let buffer = self.guest(what, ptr, cap)?;
        let Some(value) = value else {
            return Ok(-1);
        };
        if let Some(prefix) = buffer.get_mut(..value.len()) {
            prefix.copy_from_slice(value);
        }
        Ok(value.len() as i32)
    }

    fn count_output(&mut self, len: usize) -> Result<(), InteractionError> {
        self.outputs += 1;
        if self.outputs > self.limits.max_outputs {
            return Err(InteractionError::OutputLimit {
                detail: format!("more than {} outputs", self.limits.max_outputs),
            });
        }
        if len > self.limits.max_output_bytes as usize {
            return Err(InteractionError::OutputLimit {
                detail: format!(
                    "a {len}-byte payload; the class allows {} bytes",
                    self.limits.max_output_bytes
                ),
            });
        }
        Ok(())
    }

    // Every effect checks its ranges before anything else: a call naming memory outside the guest's
    // is a trap whatever else is wrong with it (its size, the output count, its topic).

    fn command(&mut self, ptr: i32, len: i32) -> Result<(), InteractionError> {
        let payload = self.guest("command", ptr, len)?.to_vec();
        self.count_output(payload.len())?;
        self.outcome.commands.push(payload.into());
        Ok(())
    }

    fn publish(
        &mut self,
        topic_ptr: i32,
        topic_len: i32,
        ptr: i32,
        len: i32,
    ) -> Result<(), InteractionError> {
        let topic = self.guest("publish topic", topic_ptr, topic_len)?;
        // No class topic is this long: a longer one is refused, and reported cut.
        let too_long = topic.len() > MAX_TOPIC_BYTES;
        let topic = lossy_prefix(topic, MAX_TOPIC_BYTES);
        let payload = self.guest("publish", ptr, len)?.to_vec();
        self.count_output(payload.len())?;
        let allowed = !too_long
            && edgefleet_protocol::topic::is_class_topic(&topic)
            && self
                .limits
                .allowed_topics
                .iter()
                .any(|filter| edgefleet_protocol::topic::filter_matches(filter, &topic));
        if !allowed {
            return Err(InteractionError::ForbiddenTopic { topic });
        }
        self.outcome.upstream.push(Upstream { topic, payload });
        Ok(())
    }

    fn state_set(&mut self, ptr: i32, len: i32) -> Result<(), InteractionError> {
        let state = self.guest("state_set", ptr, len)?;
        if state.len() > self.limits.max_state_bytes as usize {
            return Err(InteractionError::StateLimit {
                size: state.len() as u64,
                limit: self.limits.max_state_bytes,
            });
        }
        let state = state.to_vec();
        self.outcome.new_state = Some(state.into());
        Ok(())
    }

    fn log(&mut self, level: i32, ptr: i32, len: i32) -> Result<(), InteractionError> {
        let line = self.guest("log", ptr, len)?;
        if self.outcome.logs.len() >= MAX_LOG_LINES {
            self.outcome.dropped_logs += 1;
            return Ok(());
        }
        let text = lossy_prefix(line, MAX_LOG_LINE_BYTES);
        self.outcome.logs.push(LogLine {
            level: LogLevel::from_abi(level),
            text,
        });
        Ok(())
    }
}

/// Guest text as kept in an answer (a log line, a refused topic): its first `max` bytes as UTF-8,
/// invalid sequences replaced, and cut again on a character boundary if the replacements (3 bytes
/// each) made it longer, so that it is never more than `max` bytes (the answer's size bound in
/// `edgefleet_sandbox::wire` counts on it).
fn lossy_prefix(bytes: &[u8], max: usize) -> String {
    let mut text = String::from_utf8_lossy(&bytes[..bytes.len().min(max)]).into_owned();
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// A new `WasmEdge_FunctionTypeContext` for an ABI host function; the caller deletes it.
fn function_type(f: &HostFunction) -> *mut ffi::WasmEdge_FunctionTypeContext {
    let raw = |types: &[ValType]| -> Vec<ffi::WasmEdge_ValType> {
        types
            .iter()
            .map(|t| {
                // SAFETY: plain value constructors.
                unsafe {
                    match t {
                        ValType::I64 => ffi::WasmEdge_ValTypeGenI64(),
                        ValType::I32 => ffi::WasmEdge_ValTypeGenI32(),
                    }
                }
            })
            .collect()
    };
    let (params, results) = (raw(f.params), raw(f.results));
    // SAFETY: WasmEdge copies both lists.
    unsafe {
        ffi::WasmEdge_FunctionTypeCreate(
            params.as_ptr(),
            params.len() as u32,
            results.as_ptr(),
            results.len() as u32,
        )
    }
}

type RawHostFunc = unsafe extern "C" fn(
    *mut c_void,
    *const ffi::WasmEdge_CallingFrameContext,
    *const ffi::WasmEdge_Value,
    *mut ffi::WasmEdge_Value,
) -> ffi::WasmEdge_Result;

/// The implementation of each host function of [`HOST_FUNCTIONS`], which holds their
/// names and types (shared with admission's import check).
fn implementation(name: &str) -> Option<RawHostFunc> {
    Some(match name {
        "message" => host_message,
        "device_id" => host_device_id,
        "channel" => host_channel,
        "config" => host_config,
        "state_get" => host_state_get,
        "state_set" => host_state_set,
        "command" => host_command,
        "publish" => host_publish,
        "log" => host_log,
        "now_ms" => host_now_ms,
        _ => return None,
    })
}

/// Shared body of every host function: decode the i32 parameters, run `body`, and either write its
/// result or record the violation and stop the guest.
///
/// # Safety
/// `data` must be the module's `HostState`, `params`/`returns` must hold as many values as the
/// function's type says (WasmEdge guarantees both for functions made in `build_runtime`).
unsafe fn host_call<const N: usize>(
    data: *mut c_void,
    params: *const ffi::WasmEdge_Value,
    returns: *mut ffi::WasmEdge_Value,
    body: impl FnOnce(&mut HostState, [i32; N]) -> Result<Option<ffi::WasmEdge_Value>, InteractionError>,
) -> ffi::WasmEdge_Result {
    // SAFETY: see the function's contract.
    unsafe {
        let host = &mut *(data as *mut HostState);
        let mut args = [0i32; N];
        for (i, arg) in args.iter_mut().enumerate() {
            *arg = ffi::WasmEdge_ValueGetI32(*params.add(i));
        }
        match body(host, args) {
            Ok(Some(value)) => {
                *returns = value;
                ffi::WasmEdge_Result { Code: 0 }
            }
            Ok(None) => ffi::WasmEdge_Result { Code: 0 },
            Err(violation) => {
                host.violation = Some(violation);
                ffi::WasmEdge_ResultGen(ffi::WasmEdge_ErrCategory_UserLevelError, 1)
            }
        }
    }
}

fn i32_value(v: i32) -> Option<ffi::WasmEdge_Value> {
    // SAFETY: plain value constructor.
    Some(unsafe { ffi::WasmEdge_ValueGenI32(v) })
}

macro_rules! copy_host_fn {
    ($name:ident, $what:literal, |$host:ident| $value:expr) => {
        unsafe extern "C" fn $name(
            data: *mut c_void,
            _frame: *const ffi::WasmEdge_CallingFrameContext,
            params: *const ffi::WasmEdge_Value,
            returns: *mut ffi::WasmEdge_Value,
        ) -> ffi::WasmEdge_Result {
            // SAFETY: called by WasmEdge with this function's type and data (see host_call).
            unsafe {
                host_call(
                    data,
                    params,
                    returns,
                    |$host: &mut HostState, [ptr, cap]| {
                        $host.copy_out($what, $value, ptr, cap).map(i32_value)
                    },
                )
            }
        }
    };
}

copy_host_fn!(host_message, "message", |host| Some(
    &host.interaction().payload
));
copy_host_fn!(host_device_id, "device_id", |host| Some(
    host.interaction().device.as_bytes()
));
copy_host_fn!(host_channel, "channel", |host| Some(
    host.interaction().channel.as_bytes()
));
copy_host_fn!(host_config, "config", |host| Some(&host.config));
copy_host_fn!(host_state_get, "state_get", |host| host
    .interaction()
    .state
    .as_deref()
    .map(|state| &state[..]));

macro_rules! effect_host_fn {
    ($name:ident, $n:literal, |$host:ident, $args:pat_param| $body:expr) => {
        unsafe extern "C" fn $name(
            data: *mut c_void,
            _frame: *const ffi::WasmEdge_CallingFrameContext,
            params: *const ffi::WasmEdge_Value,
            returns: *mut ffi::WasmEdge_Value,
        ) -> ffi::WasmEdge_Result {
            // SAFETY: called by WasmEdge with this function's type and data (see host_call).
            unsafe {
                host_call::<$n>(data, params, returns, |$host: &mut HostState, $args| {
                    $body.map(|()| None)
                })
            }
        }
    };
}

effect_host_fn!(host_state_set, 2, |host, [ptr, len]| host
    .state_set(ptr, len));
effect_host_fn!(host_command, 2, |host, [ptr, len]| host.command(ptr, len));
effect_host_fn!(host_publish, 4, |host, [tp, tl, ptr, len]| host
    .publish(tp, tl, ptr, len));
effect_host_fn!(host_log, 3, |host, [level, ptr, len]| host
    .log(level, ptr, len));

unsafe extern "C" fn host_now_ms(
    data: *mut c_void,
    _frame: *const ffi::WasmEdge_CallingFrameContext,
    params: *const ffi::WasmEdge_Value,
    returns: *mut ffi::WasmEdge_Value,
) -> ffi::WasmEdge_Result {
    // SAFETY: called by WasmEdge with this function's type and data (see host_call).
    unsafe {
        host_call::<0>(data, params, returns, |host: &mut HostState, []| {
            Ok(Some(ffi::WasmEdge_ValueGenI64(host.interaction().now_ms)))
        })
    }
}

/// Keeps WasmEdge's fault handlers installed for the life of the process.
///
/// WasmEdge 0.17.1 installs its SIGSEGV/SIGBUS/SIGFPE handlers when the first call into AOT code
/// starts and restores the defaults when the last one ends (a process-wide count), which costs six
/// `rt_sigaction` syscalls per call — about half of a warm call and a sixth of a fresh interaction
/// here. A thread parked for good inside AOT code (the [`PIN_MODULE`](edgefleet_sandbox::PIN_MODULE) compiled to `artefact`, whose
/// export calls a host function that never returns) keeps the count above zero. This relies on an
/// implementation detail of WasmEdge 0.17.1; `tests/fault_handler_pin.rs` checks that it holds.
pub fn pin_fault_handlers(artefact: &Path) -> Result<(), EngineError> {
    struct Parked {
        entered: AtomicBool,
    }
    unsafe extern "C" fn park(
        data: *mut c_void,
        _frame: *const ffi::WasmEdge_CallingFrameContext,
        _params: *const ffi::WasmEdge_Value,
        _returns: *mut ffi::WasmEdge_Value,
    ) -> ffi::WasmEdge_Result {
        // SAFETY: `data` is the leaked `Parked` below, alive for the life of the process.
        let parked = unsafe { &*(data as *const Parked) };
        parked.entered.store(true, Ordering::Release);
        loop {
            std::thread::park();
        }
    }
    /// The contexts the pin thread runs with; never freed, like the thread itself.
    struct Contexts {
        executor: *mut ffi::WasmEdge_ExecutorContext,
        func: *const ffi::WasmEdge_FunctionInstanceContext,
    }
    // SAFETY: the contexts are used by the pin thread only, after this function handed them over.
    unsafe impl Send for Contexts {}

    let parked: &'static Parked = Box::leak(Box::new(Parked {
        entered: AtomicBool::new(false),
    }));
    let conf = Configure::new();
    let ast = load_aot(&conf, artefact)?;
    // SAFETY: contexts created here are intentionally never deleted: the pin thread uses them until
    // the process exits.
    let contexts = unsafe {
        let store = ffi::WasmEdge_StoreCreate();
        let executor = ffi::WasmEdge_ExecutorCreate(conf.0, ptr::null_mut());
        let imports = ffi::WasmEdge_ModuleInstanceCreate(wasm_string("edgefleet_pin"));
        let ty = ffi::WasmEdge_FunctionTypeCreate(ptr::null(), 0, ptr::null(), 0);
        let func = ffi::WasmEdge_FunctionInstanceCreate(
            ty,
            Some(park),
            parked as *const Parked as *mut c_void,
            0,
        );
        ffi::WasmEdge_FunctionTypeDelete(ty);
        ffi::WasmEdge_ModuleInstanceAddFunction(imports, wasm_string("park"), func);
        check(
            "register the pin host module",
            ffi::WasmEdge_ExecutorRegisterImport(executor, store, imports),
        )?;
        let mut instance = ptr::null_mut();
        check(
            "instantiate the pin module",
            ffi::WasmEdge_ExecutorInstantiate(executor, &mut instance, store, ast),
        )?;
        let func = ffi::WasmEdge_ModuleInstanceFindFunction(instance, wasm_string("pin"));
        if func.is_null() {
            return Err(EngineError::WasmEdge {
                action: "find the pin export",
                message: "missing".into(),
            });
        }
        Contexts { executor, func }
    };
    std::mem::forget(conf);
    std::thread::Builder::new()
        .name("fault-handler-pin".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let contexts = contexts;
            // SAFETY: see `Contexts`; the call never returns.
            unsafe {
                ffi::WasmEdge_ExecutorInvoke(
                    contexts.executor,
                    contexts.func,
                    ptr::null(),
                    0,
                    ptr::null_mut(),
                    0,
                );
            }
        })
        .map_err(|e| EngineError::WasmEdge {
            action: "start the pin thread",
            message: e.to_string(),
        })?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while !parked.entered.load(Ordering::Acquire) {
        if std::time::Instant::now() > deadline {
            return Err(EngineError::WasmEdge {
                action: "pin the fault handlers",
                message: "the pin thread did not enter AOT code".into(),
            });
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The host functions the worker registers are the ones `docs/guest-abi.wit` describes: the
    //! same names in the same import module, with the same core types.

    use edgefleet_guest_abi::wit::{self, CoreFunction};

    use super::*;

    fn string(s: ffi::WasmEdge_String) -> String {
        // SAFETY: a WasmEdge string points at `Length` bytes, owned by the context it came from.
        let bytes = unsafe { std::slice::from_raw_parts(s.Buf.cast::<u8>(), s.Length as usize) };
        String::from_utf8(bytes.to_vec()).expect("UTF-8 names")
    }

    fn value_types(
        len: u32,
        get: impl FnOnce(*mut ffi::WasmEdge_ValType, u32) -> u32,
    ) -> Vec<ValType> {
        // SAFETY: plain value constructor, overwritten by `get`.
        let mut raw = vec![unsafe { ffi::WasmEdge_ValTypeGenI32() }; len as usize];
        assert_eq!(get(raw.as_mut_ptr(), len), len);
        raw.into_iter()
            .map(|t| {
                // SAFETY: plain value accessors.
                unsafe {
                    if ffi::WasmEdge_ValTypeIsI32(t) {
                        ValType::I32
                    } else if ffi::WasmEdge_ValTypeIsI64(t) {
                        ValType::I64
                    } else {
                        panic!("a host function with a value type the ABI does not use")
                    }
                }
            })
            .collect()
    }

    /// The functions of an import module as WasmEdge holds them, sorted by name.
    fn registered(module: *const ffi::WasmEdge_ModuleInstanceContext) -> Vec<CoreFunction> {
        // SAFETY: the module is live for the call; names and types belong to it and are read only.
        unsafe {
            let len = ffi::WasmEdge_ModuleInstanceListFunctionLength(module);
            let mut names = vec![wasm_string(""); len as usize];
            assert_eq!(
                ffi::WasmEdge_ModuleInstanceListFunction(module, names.as_mut_ptr(), len),
                len
            );
            let mut functions: Vec<CoreFunction> = names
                .into_iter()
                .map(|name| {
                    let func = ffi::WasmEdge_ModuleInstanceFindFunction(module, name);
                    let ty = ffi::WasmEdge_FunctionInstanceGetFunctionType(func);
                    CoreFunction {
                        name: string(name),
                        params: value_types(
                            ffi::WasmEdge_FunctionTypeGetParametersLength(ty),
                            |list, len| ffi::WasmEdge_FunctionTypeGetParameters(ty, list, len),
                        ),
                        results: value_types(
                            ffi::WasmEdge_FunctionTypeGetReturnsLength(ty),
                            |list, len| ffi::WasmEdge_FunctionTypeGetReturns(ty, list, len),
                        ),
                    }
                })
                .collect();
            functions.sort();
            functions
        }
    }

    fn module_name(module: *const ffi::WasmEdge_ModuleInstanceContext) -> String {
        // SAFETY: the module is live; the name belongs to it.
        string(unsafe { ffi::WasmEdge_ModuleInstanceGetModuleName(module) })
    }

    #[test]
    fn the_registered_host_functions_are_the_ones_the_wit_describes() {
        let document = wit::parse(wit::WIT).unwrap_or_else(|e| panic!("docs/guest-abi.wit: {e}"));
        let mut described = document
            .interface("host")
            .expect("interface host")
            .functions
            .clone();
        described.sort();

        let conf = Configure::new();
        let mut host = HostState::new(ClassLimits::default(), Vec::new());
        let memory = MemoryLimits {
            min_pages: 1,
            max_pages: 1,
        };
        let runtime = build_runtime(&conf, memory, &mut host).expect("the runtime builds");
        let [env, abi] = runtime.imports[..] else {
            panic!("two import modules, got {}", runtime.imports.len())
        };
        assert_eq!(module_name(abi), format!("edgefleet_v{}", document.major));
        assert_eq!(registered(abi), described);

        assert_eq!(module_name(env), MEMORY_MODULE);
        assert_eq!(registered(env), [], "env holds only the memory");
        // SAFETY: the module is live; a plain lookup.
        let found =
            unsafe { ffi::WasmEdge_ModuleInstanceFindMemory(env, wasm_string(MEMORY_NAME)) };
        assert_eq!(found, runtime.memory);
    }
}
