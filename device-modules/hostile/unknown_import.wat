;; Hostile: imports a host function that ABI v1 does not have. Refused at load, naming the import.
(module
  (@custom "edgefleet_abi" "\01\00\00\00")
  (import "edgefleet_v1" "launch_missiles" (func $launch_missiles (param i32) (result i32)))
  (import "env" "memory" (memory 1))
  (func (export "edgefleet_handle") (result i32)
    (call $launch_missiles (i32.const 3))))
