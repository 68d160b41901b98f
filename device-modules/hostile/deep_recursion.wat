;; Hostile: unbounded non-tail recursion, to exhaust the stack. Each call stores its depth, recurses,
;; then adds the callee's result, a load that the callee's store may have changed, and its own depth:
;; the call is not in tail position and its frame stays live, so no compiler can turn it into a loop.
;; The base case (depth -1, after 2^32 calls) is never reached, but keeps the function from being
;; provably non-returning.
(module
  (@custom "edgefleet_abi" "\01\00\00\00")
  (import "env" "memory" (memory 1))
  (func $descend (param $depth i32) (result i32)
    (if (i32.eq (local.get $depth) (i32.const -1))
      (then (return (i32.const 0))))
    (i32.store (i32.const 0) (local.get $depth))
    (i32.add
      (i32.add
        (call $descend (i32.add (local.get $depth) (i32.const 1)))
        (i32.load (i32.const 0)))
      (local.get $depth)))
  (func (export "edgefleet_handle") (result i32)
    (drop (call $descend (i32.const 0)))
    (i32.const 0)))
