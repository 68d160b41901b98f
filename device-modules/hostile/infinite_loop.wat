;; Hostile: the handler spins forever. The agent ends it at the class's time budget (Timeout).
(module
  (@custom "edgefleet_abi" "\01\00\00\00")
  (import "env" "memory" (memory 1))
  (func (export "edgefleet_handle") (result i32)
    (loop $spin
      (br $spin))
    (i32.const 0)))
