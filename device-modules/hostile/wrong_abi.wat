;; Hostile: built for a guest ABI v2 (section version 2, imports from edgefleet_v2). Refused at load:
;; "built for guest ABI v2; this agent supports v1".
(module
  (@custom "edgefleet_abi" "\02\00\00\00")
  (import "edgefleet_v2" "command" (func $command (param i32 i32)))
  (import "env" "memory" (memory 1))
  (func (export "edgefleet_handle") (result i32)
    (call $command (i32.const 0) (i32.const 0))
    (i32.const 0)))
