;; Probe: a counter in device state. Reads the state as a little-endian u32 (no state: 0), adds 1,
;; stores it and sends it as a 4-byte command. A state of any other length is rejected with code 3.
(module
  (@custom "edgefleet_abi" "\01\00\00\00")
  (import "edgefleet_v1" "state_get" (func $state_get (param i32 i32) (result i32)))
  (import "edgefleet_v1" "state_set" (func $state_set (param i32 i32)))
  (import "edgefleet_v1" "command" (func $command (param i32 i32)))
  (import "env" "memory" (memory 1))
  (func (export "edgefleet_handle") (result i32)
    (local $len i32)
    (local.set $len (call $state_get (i32.const 0) (i32.const 4)))
    ;; -1 (no state) leaves the zeroed memory: the count starts from 0.
    (if (i32.and
          (i32.ne (local.get $len) (i32.const -1))
          (i32.ne (local.get $len) (i32.const 4)))
      (then (return (i32.const 3))))
    (i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (i32.const 1)))
    (call $state_set (i32.const 0) (i32.const 4))
    (call $command (i32.const 0) (i32.const 4))
    (i32.const 0)))
