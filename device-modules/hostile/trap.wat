;; Hostile: the handler traps (unreachable). The agent reports Trap and commits nothing.
(module
  (@custom "edgefleet_abi" "\01\00\00\00")
  (import "env" "memory" (memory 1))
  (func (export "edgefleet_handle") (result i32)
    (unreachable)))
