;; Hostile: 1000 one-byte commands (the default max_outputs is 16): OutputLimit.
(module
  (@custom "edgefleet_abi" "\01\00\00\00")
  (import "edgefleet_v1" "command" (func $command (param i32 i32)))
  (import "env" "memory" (memory 1))
  (func (export "edgefleet_handle") (result i32)
    (local $sent i32)
    (loop $send
      (call $command (i32.const 0) (i32.const 1))
      (local.set $sent (i32.add (local.get $sent) (i32.const 1)))
      (br_if $send (i32.lt_u (local.get $sent) (i32.const 1000))))
    (i32.const 0)))
