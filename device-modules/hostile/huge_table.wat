;; Hostile: defines a funcref table of at least 10,000,000 elements: tens of megabytes of references
;; allocated at instantiation, unless the agent refuses such a table at load.
(module
  (@custom "edgefleet_abi" "\01\00\00\00")
  (import "env" "memory" (memory 1))
  (table 10000000 funcref)
  (func (export "edgefleet_handle") (result i32)
    (i32.const 0)))
