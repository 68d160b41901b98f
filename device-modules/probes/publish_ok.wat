;; Probe: publishes CBOR {"ok": true} on "event/ok", a topic the default allowed topics (event/#) permit.
(module
  (@custom "edgefleet_abi" "\01\00\00\00")
  (import "edgefleet_v1" "publish" (func $publish (param i32 i32 i32 i32)))
  (import "env" "memory" (memory 1))
  (data (i32.const 0) "event/ok")
  ;; CBOR {"ok": true}
  (data (i32.const 16) "\a1\62ok\f5")
  (func (export "edgefleet_handle") (result i32)
    (call $publish (i32.const 0) (i32.const 8) (i32.const 16) (i32.const 5))
    (i32.const 0)))
