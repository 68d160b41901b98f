;; Hostile: a well-formed handler without the edgefleet_abi section. Refused at load.
(module
  (import "env" "memory" (memory 1))
  (func (export "edgefleet_handle") (result i32)
    (i32.const 0)))
