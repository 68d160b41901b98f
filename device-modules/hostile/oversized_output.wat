;; Hostile: one command with a 60000-byte payload (the default max_output_bytes is 4096): OutputLimit.
(module
  (@custom "edgefleet_abi" "\01\00\00\00")
  (import "edgefleet_v1" "command" (func $command (param i32 i32)))
  (import "env" "memory" (memory 1))
  (func (export "edgefleet_handle") (result i32)
    (memory.fill (i32.const 0) (i32.const 0x5a) (i32.const 60000))
    (call $command (i32.const 0) (i32.const 60000))
    (i32.const 0)))
