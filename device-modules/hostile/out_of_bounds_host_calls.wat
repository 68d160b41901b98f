;; Hostile: hands every host function a memory range it does not own. The first payload byte picks
;; the case (memory is one page, 65536 bytes). Guest ABI v1: a negative length, or a range
;; [ptr, ptr + len) not inside memory (ptr + len computed without wrapping), traps the instance —
;; before any other check, so the agent must answer Trap (naming the host function) for cases 1-23,
;; never a truncated result, an OutputLimit, a StateLimit or a ForbiddenTopic:
;;   1 log past the end (its first 512 bytes are inside)   13 publish to a forbidden topic, payload past the end
;;   2 log with length -1                                  14 state_set past the end
;;   3 log whose ptr + len wraps around 2^32               15 state_set with length -1
;;   4 log past the end after 32 lines (would be dropped)  16 state_set past the end, over max_state_bytes
;;   5 command past the end                                17 message into a buffer past the end (1-byte value)
;;   6 command with length -1                              18 message with capacity -1
;;   7 command past the end, over max_output_bytes         19 message with an empty buffer past the end
;;   8 command whose ptr + len wraps around 2^32           20 device_id into a buffer past the end
;;   9 publish with its topic past the end                 21 channel into a buffer past the end
;;  10 publish with its payload past the end               22 config into a buffer past the end
;;  11 publish with payload length -1                      23 state_get into a buffer past the end (no state)
;;  12 publish with topic length -1
;; Case 0 stays inside memory and succeeds: a 600-byte log line of invalid UTF-8 (kept as at most
;; 512 bytes of U+FFFD), an empty log line at the very end of memory, a 4-byte command from the last
;; 4 bytes of memory (zeros), and a zero-capacity `message` call at the end of memory.
(module
  (@custom "edgefleet_abi" "\01\00\00\00")
  (import "edgefleet_v1" "message" (func $message (param i32 i32) (result i32)))
  (import "edgefleet_v1" "device_id" (func $device_id (param i32 i32) (result i32)))
  (import "edgefleet_v1" "channel" (func $channel (param i32 i32) (result i32)))
  (import "edgefleet_v1" "config" (func $config (param i32 i32) (result i32)))
  (import "edgefleet_v1" "state_get" (func $state_get (param i32 i32) (result i32)))
  (import "edgefleet_v1" "state_set" (func $state_set (param i32 i32)))
  (import "edgefleet_v1" "command" (func $command (param i32 i32)))
  (import "edgefleet_v1" "publish" (func $publish (param i32 i32 i32 i32)))
  (import "edgefleet_v1" "log" (func $log (param i32 i32 i32)))
  (import "env" "memory" (memory 1 1))
  (data (i32.const 16) "telemetry")
  (data (i32.const 32) "control/reboot")
  (data (i32.const 48) "hello")
  (func (export "edgefleet_handle") (result i32)
    (local $case i32)
    (local $i i32)
    (drop (call $message (i32.const 0) (i32.const 1)))
    (local.set $case (i32.load8_u (i32.const 0)))
    (if (i32.eqz (local.get $case))
      (then
        (memory.fill (i32.const 100) (i32.const 0xff) (i32.const 600))
        (call $log (i32.const 2) (i32.const 100) (i32.const 600))
        (call $log (i32.const 2) (i32.const 65536) (i32.const 0))
        (call $command (i32.const 65532) (i32.const 4))
        (drop (call $message (i32.const 65536) (i32.const 0)))))
    (if (i32.eq (local.get $case) (i32.const 1))
      (then (call $log (i32.const 2) (i32.const 65000) (i32.const 1000))))
    (if (i32.eq (local.get $case) (i32.const 2))
      (then (call $log (i32.const 2) (i32.const 0) (i32.const -1))))
    (if (i32.eq (local.get $case) (i32.const 3))
      (then (call $log (i32.const 2) (i32.const -16) (i32.const 32))))
    (if (i32.eq (local.get $case) (i32.const 4))
      (then
        (loop $more
          (call $log (i32.const 2) (i32.const 48) (i32.const 5))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $more (i32.lt_u (local.get $i) (i32.const 32))))
        (call $log (i32.const 2) (i32.const 65000) (i32.const 1000))))
    (if (i32.eq (local.get $case) (i32.const 5))
      (then (call $command (i32.const 65000) (i32.const 1000))))
    (if (i32.eq (local.get $case) (i32.const 6))
      (then (call $command (i32.const 0) (i32.const -1))))
    (if (i32.eq (local.get $case) (i32.const 7))
      (then (call $command (i32.const 65000) (i32.const 5000))))
    (if (i32.eq (local.get $case) (i32.const 8))
      (then (call $command (i32.const -16) (i32.const 32))))
    (if (i32.eq (local.get $case) (i32.const 9))
      (then (call $publish (i32.const 65530) (i32.const 100) (i32.const 48) (i32.const 5))))
    (if (i32.eq (local.get $case) (i32.const 10))
      (then (call $publish (i32.const 16) (i32.const 9) (i32.const 65000) (i32.const 1000))))
    (if (i32.eq (local.get $case) (i32.const 11))
      (then (call $publish (i32.const 16) (i32.const 9) (i32.const 48) (i32.const -1))))
    (if (i32.eq (local.get $case) (i32.const 12))
      (then (call $publish (i32.const 16) (i32.const -1) (i32.const 48) (i32.const 5))))
    (if (i32.eq (local.get $case) (i32.const 13))
      (then (call $publish (i32.const 32) (i32.const 14) (i32.const 65000) (i32.const 1000))))
    (if (i32.eq (local.get $case) (i32.const 14))
      (then (call $state_set (i32.const 65000) (i32.const 1000))))
    (if (i32.eq (local.get $case) (i32.const 15))
      (then (call $state_set (i32.const 0) (i32.const -1))))
    (if (i32.eq (local.get $case) (i32.const 16))
      (then (call $state_set (i32.const 60000) (i32.const 20000))))
    (if (i32.eq (local.get $case) (i32.const 17))
      (then (drop (call $message (i32.const 65000) (i32.const 1000)))))
    (if (i32.eq (local.get $case) (i32.const 18))
      (then (drop (call $message (i32.const 0) (i32.const -1)))))
    (if (i32.eq (local.get $case) (i32.const 19))
      (then (drop (call $message (i32.const 65537) (i32.const 0)))))
    (if (i32.eq (local.get $case) (i32.const 20))
      (then (drop (call $device_id (i32.const 65000) (i32.const 1000)))))
    (if (i32.eq (local.get $case) (i32.const 21))
      (then (drop (call $channel (i32.const 65000) (i32.const 1000)))))
    (if (i32.eq (local.get $case) (i32.const 22))
      (then (drop (call $config (i32.const 65000) (i32.const 1000)))))
    (if (i32.eq (local.get $case) (i32.const 23))
      (then (drop (call $state_get (i32.const 65000) (i32.const 1000)))))
    (i32.const 0)))
