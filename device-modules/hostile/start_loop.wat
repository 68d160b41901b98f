;; Hostile at instantiation: the start function spins forever, before the handler is ever called.
;; The time budget covers instantiation, so the agent ends it with Timeout.
(module
  (@custom "edgefleet_abi" "\01\00\00\00")
  (import "env" "memory" (memory 1))
  (func $spin
    (loop $forever
      (br $forever)))
  (start $spin)
  (func (export "edgefleet_handle") (result i32)
    (i32.const 0)))
