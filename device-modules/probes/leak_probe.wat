;; Probe: is anything left over from a previous interaction? Increments a mutable global and the i32
;; at address 1024, then sends one command of 8 bytes: the global's value, then the memory value (both
;; little-endian i32). A fresh, zeroed instance reports 1, 1 every time.
(module
  (@custom "edgefleet_abi" "\01\00\00\00")
  (import "edgefleet_v1" "command" (func $command (param i32 i32)))
  (import "env" "memory" (memory 1))
  (global $count (mut i32) (i32.const 0))
  (func (export "edgefleet_handle") (result i32)
    (global.set $count (i32.add (global.get $count) (i32.const 1)))
    (i32.store (i32.const 1024) (i32.add (i32.load (i32.const 1024)) (i32.const 1)))
    (i32.store (i32.const 0) (global.get $count))
    (i32.store (i32.const 4) (i32.load (i32.const 1024)))
    (call $command (i32.const 0) (i32.const 8))
    (i32.const 0)))
