;; Hostile: grows memory one page at a time until memory.grow returns -1, writing to every new page,
;; then sends ONE command whose 4-byte little-endian payload is the page count reached, and returns 0.
;; Against a class limit of N pages the command must read N: growth past the limit fails cleanly.
(module
  (@custom "edgefleet_abi" "\01\00\00\00")
  (import "edgefleet_v1" "command" (func $command (param i32 i32)))
  (import "env" "memory" (memory 1))
  (func (export "edgefleet_handle") (result i32)
    (local $page i32)
    (block $full
      (loop $grow
        ;; memory.grow returns the previous size: the index of the new page.
        (local.set $page (memory.grow (i32.const 1)))
        (br_if $full (i32.eq (local.get $page) (i32.const -1)))
        ;; Touch the first and the last word of the new page.
        (i32.store (i32.shl (local.get $page) (i32.const 16)) (local.get $page))
        (i32.store
          (i32.sub (i32.shl (i32.add (local.get $page) (i32.const 1)) (i32.const 16)) (i32.const 4))
          (local.get $page))
        (br $grow)))
    (i32.store (i32.const 0) (memory.size))
    (call $command (i32.const 0) (i32.const 4))
    (i32.const 0)))
