;; Probe: a busy loop whose length comes from the message. N = the message's first byte (0 for an empty
;; message); the handler runs N × 1,000,000 steps of a 64-bit linear congruential generator, a chain of
;; dependent multiplications that no compiler can fold into a closed form, then stores the result and
;; returns 0. Compiled ahead of time that is roughly 1-2 ms per unit of N on a 3 GHz core; interpreted,
;; far longer. Calibrate against the runtime in use before relying on a duration.
(module
  (@custom "edgefleet_abi" "\01\00\00\00")
  (import "edgefleet_v1" "message" (func $message (param i32 i32) (result i32)))
  (import "env" "memory" (memory 1))
  (func (export "edgefleet_handle") (result i32)
    (local $len i32)
    (local $steps i32)
    (local $x i64)
    (local.set $len (call $message (i32.const 1024) (i32.const 64512)))
    (if (i32.and
          (i32.gt_s (local.get $len) (i32.const 0))
          (i32.le_s (local.get $len) (i32.const 64512)))
      (then
        (local.set $steps (i32.mul (i32.load8_u (i32.const 1024)) (i32.const 1000000)))))
    (local.set $x (i64.const 1))
    (block $done
      (loop $step
        (br_if $done (i32.eqz (local.get $steps)))
        (local.set $x
          (i64.add
            (i64.mul (local.get $x) (i64.const 6364136223846793005))
            (i64.const 1442695040888963407)))
        (local.set $steps (i32.sub (local.get $steps) (i32.const 1)))
        (br $step)))
    (i64.store (i32.const 0) (local.get $x))
    (i32.const 0)))
