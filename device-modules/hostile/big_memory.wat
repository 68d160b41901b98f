;; Hostile: imports a memory of at least 1000 pages (62.5 MiB), beyond the default max_memory_pages
;; of 16. Refused at load rather than clamped.
(module
  (@custom "edgefleet_abi" "\01\00\00\00")
  (import "env" "memory" (memory 1000))
  (func (export "edgefleet_handle") (result i32)
    (i32.const 0)))
