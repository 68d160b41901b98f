;; Probe: echoes the message payload back to the device as a command and publishes it on "telemetry"
;; (rejecting, code 1, a message larger than its 63 KiB buffer).
(module
  (@custom "edgefleet_abi" "\01\00\00\00")
  (import "edgefleet_v1" "message" (func $message (param i32 i32) (result i32)))
  (import "edgefleet_v1" "command" (func $command (param i32 i32)))
  (import "edgefleet_v1" "publish" (func $publish (param i32 i32 i32 i32)))
  (import "env" "memory" (memory 1))
  (data (i32.const 0) "telemetry")
  (func (export "edgefleet_handle") (result i32)
    (local $len i32)
    (local.set $len (call $message (i32.const 1024) (i32.const 64512)))
    (if (i32.gt_u (local.get $len) (i32.const 64512))
      (then (return (i32.const 1))))
    (call $command (i32.const 1024) (local.get $len))
    (call $publish (i32.const 0) (i32.const 9) (i32.const 1024) (local.get $len))
    (i32.const 0)))
