;; Probe: takes its worker down on a marker. A message whose first byte is 0xFF sends the handler into
;; unbounded non-tail recursion, as hostile/deep_recursion does: a native stack overflow kills the worker
;; running it, or the runtime traps it. Any other message is echoed back as a command (a message larger
;; than memory is rejected, code 1). For batches in which one interaction crashes the worker.
(module
  (@custom "edgefleet_abi" "\01\00\00\00")
  (import "edgefleet_v1" "message" (func $message (param i32 i32) (result i32)))
  (import "edgefleet_v1" "command" (func $command (param i32 i32)))
  (import "env" "memory" (memory 1))
  (func $descend (param $depth i32) (result i32)
    (if (i32.eq (local.get $depth) (i32.const -1))
      (then (return (i32.const 0))))
    (i32.store (i32.const 65532) (local.get $depth))
    (i32.add
      (i32.add
        (call $descend (i32.add (local.get $depth) (i32.const 1)))
        (i32.load (i32.const 65532)))
      (local.get $depth)))
  (func (export "edgefleet_handle") (result i32)
    (local $len i32)
    (local.set $len (call $message (i32.const 0) (i32.const 65536)))
    (if (i32.gt_u (local.get $len) (i32.const 65536))
      (then (return (i32.const 1))))
    (if (i32.and
          (i32.gt_s (local.get $len) (i32.const 0))
          (i32.eq (i32.load8_u (i32.const 0)) (i32.const 0xff)))
      (then (drop (call $descend (i32.const 0)))))
    (call $command (i32.const 0) (local.get $len))
    (i32.const 0)))
