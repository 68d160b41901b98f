;; Probe: sends `count` commands of `size` bytes each, where the message payload is `count` then
;; `size` as little-endian u32s (`size` at most 131072; the bytes are 0xa5). Used to fill a class's
;; output limits: the agent answers with exactly those commands, or OutputLimit past the class's
;; max_outputs or max_output_bytes.
(module
  (@custom "edgefleet_abi" "\01\00\00\00")
  (import "edgefleet_v1" "message" (func $message (param i32 i32) (result i32)))
  (import "edgefleet_v1" "command" (func $command (param i32 i32)))
  (import "env" "memory" (memory 3 3))
  (func (export "edgefleet_handle") (result i32)
    (local $count i32)
    (local $size i32)
    (if (i32.ne (call $message (i32.const 0) (i32.const 8)) (i32.const 8))
      (then (return (i32.const 1))))
    (local.set $count (i32.load (i32.const 0)))
    (local.set $size (i32.load (i32.const 4)))
    (if (i32.gt_u (local.get $size) (i32.const 131072))
      (then (return (i32.const 1))))
    (memory.fill (i32.const 16) (i32.const 0xa5) (local.get $size))
    (block $done
      (loop $more
        (br_if $done (i32.eqz (local.get $count)))
        (call $command (i32.const 16) (local.get $size))
        (local.set $count (i32.sub (local.get $count) (i32.const 1)))
        (br $more)))
    (i32.const 0)))
