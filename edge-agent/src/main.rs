fn main() {
    let v = unsafe { std::ffi::CStr::from_ptr(wasmedge_sys::ffi::WasmEdge_VersionGet()) };
    println!("{}", v.to_string_lossy());
}
