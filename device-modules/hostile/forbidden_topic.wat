;; Hostile: publishes to "control/reboot", outside the default allowed topics: ForbiddenTopic.
(module
  (@custom "edgefleet_abi" "\01\00\00\00")
  (import "edgefleet_v1" "publish" (func $publish (param i32 i32 i32 i32)))
  (import "env" "memory" (memory 1))
  (data (i32.const 0) "control/reboot")
  ;; CBOR {"go": true}
  (data (i32.const 16) "\a1\62go\f5")
  (func (export "edgefleet_handle") (result i32)
    (call $publish (i32.const 0) (i32.const 14) (i32.const 16) (i32.const 5))
    (i32.const 0)))
