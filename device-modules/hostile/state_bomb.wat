;; Hostile: replaces the device state with 900 KiB (the default max_state_bytes is 16384): StateLimit.
;; Its memory is 16 pages (1 MiB), the default max_memory_pages, so the range itself is valid.
(module
  (@custom "edgefleet_abi" "\01\00\00\00")
  (import "edgefleet_v1" "state_set" (func $state_set (param i32 i32)))
  (import "env" "memory" (memory 16))
  (func (export "edgefleet_handle") (result i32)
    (call $state_set (i32.const 0) (i32.const 921600))
    (i32.const 0)))
