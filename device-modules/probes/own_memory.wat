;; Probe: a module that DEFINES (and exports) its own 1-page memory instead of importing env.memory,
;; as modules built without --import-memory do. The agent rewrites the definition into an import at
;; load; the module then echoes the message payload back as a command (rejecting, code 1, a message
;; larger than its memory).
(module
  (@custom "edgefleet_abi" "\01\00\00\00")
  (import "edgefleet_v1" "message" (func $message (param i32 i32) (result i32)))
  (import "edgefleet_v1" "command" (func $command (param i32 i32)))
  (memory (export "memory") 1)
  (func (export "edgefleet_handle") (result i32)
    (local $len i32)
    (local.set $len (call $message (i32.const 0) (i32.const 65536)))
    (if (i32.gt_u (local.get $len) (i32.const 65536))
      (then (return (i32.const 1))))
    (call $command (i32.const 0) (local.get $len))
    (i32.const 0)))
