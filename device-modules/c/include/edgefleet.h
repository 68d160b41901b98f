/*
 * edgefleet.h — the C SDK for edgefleet device-class handlers: guest ABI v1 (docs/guest-abi.md,
 * machine-readable in docs/guest-abi.wit) for clang's wasm32 target.
 *
 * A handler module is one C file that includes this header, defines `int32_t handle(void)` and ends
 * with EF_HANDLER(handle). For each device message the agent instantiates the module afresh and
 * calls `edgefleet_handle`; the handler reads its inputs (message, class config, device state)
 * through the host functions below and emits its outputs (commands, upstream publications, the new
 * state), which the agent commits only if the handler returns EF_HANDLED.
 *
 * What the header provides, and what the build must add:
 *
 *   - the host functions of import module `edgefleet_v1`, declared with their exact ABI types
 *     (edgefleet_v1_message ... edgefleet_v1_now_ms), and safe wrappers over them (ef_message,
 *     ef_config, ef_state, ef_command, ef_publish, ef_set_state, ef_log, ef_now_ms, ...);
 *   - EF_HANDLER(fn): exports `edgefleet_handle` and emits the `edgefleet_abi` custom section
 *     (the ABI version, 4 bytes little-endian);
 *   - the reject codes of the Rust SDK (EF_REJECT_MESSAGE 1 ... EF_REJECT_OUTPUT 4) and log levels;
 *   - edgefleet_cbor.h, a small CBOR reader and writer, with helpers sending a writer's bytes.
 *   - The memory import is the linker's: link with `-Wl,--import-memory` so that the module imports
 *     `env.memory` (a module defining its memory is rewritten at load, but importing it is the
 *     intended form), plus a small stack placed first and a one-page initial memory:
 *
 *       clang --target=wasm32 -std=c11 -Os -nostdlib -ffreestanding -I device-modules/c/include \
 *         -Wl,--no-entry -Wl,--import-memory -Wl,--stack-first -Wl,-z,stack-size=16384 \
 *         -Wl,--initial-memory=65536 -Wl,--strip-all -o handler.wasm handler.c
 *
 * No libc: buffers live on the 16 KiB stack. Avoid large static buffers, which wasm-ld writes into
 * the module as zero bytes (the memory is imported, so it cannot assume zeroed memory).
 */
#ifndef EDGEFLEET_H
#define EDGEFLEET_H

#if !defined(__wasm32__)
#error "edgefleet.h is for wasm32 handler modules: build with clang --target=wasm32 (see the header)"
#endif

#include "edgefleet_cbor.h"

/* The guest ABI version this header implements, written into the `edgefleet_abi` section. */
#define EDGEFLEET_ABI_VERSION 1

/* What `edgefleet_handle` returns: 0 handled; otherwise the agent discards the outputs and reports
 * the code. The same codes as the Rust SDK's `Reject`. */
#define EF_HANDLED 0
#define EF_REJECT_MESSAGE 1 /* the device message is malformed, or larger than the handler reads */
#define EF_REJECT_CONFIG 2  /* the class config is malformed */
#define EF_REJECT_STATE 3   /* the device state is malformed */
#define EF_REJECT_OUTPUT 4  /* an output did not fit the handler's buffer */

/* The `level` of ef_log (numbers outside 0..4 clamp to the nearest). */
#define EF_LOG_ERROR 0
#define EF_LOG_WARN 1
#define EF_LOG_INFO 2
#define EF_LOG_DEBUG 3
#define EF_LOG_TRACE 4

/* ---- The host functions, exactly as guest ABI v1 types them -------------------------------------
 * Pointers are offsets into env.memory; a range outside memory or a negative length traps the
 * instance. The "copy" functions check the whole buffer [ptr, ptr + cap), return the value's full
 * length and copy it only when it fits (state_get returns -1 when the device has no state). */

#define EF_IMPORT(name) __attribute__((import_module("edgefleet_v1"), import_name(#name)))

EF_IMPORT(message) int32_t edgefleet_v1_message(uint8_t *ptr, int32_t cap);
EF_IMPORT(device_id) int32_t edgefleet_v1_device_id(uint8_t *ptr, int32_t cap);
EF_IMPORT(channel) int32_t edgefleet_v1_channel(uint8_t *ptr, int32_t cap);
EF_IMPORT(config) int32_t edgefleet_v1_config(uint8_t *ptr, int32_t cap);
EF_IMPORT(state_get) int32_t edgefleet_v1_state_get(uint8_t *ptr, int32_t cap);
EF_IMPORT(state_set) void edgefleet_v1_state_set(const uint8_t *ptr, int32_t len);
EF_IMPORT(command) void edgefleet_v1_command(const uint8_t *ptr, int32_t len);
EF_IMPORT(publish)
void edgefleet_v1_publish(const uint8_t *topic_ptr, int32_t topic_len, const uint8_t *ptr, int32_t len);
EF_IMPORT(log) void edgefleet_v1_log(int32_t level, const uint8_t *ptr, int32_t len);
EF_IMPORT(now_ms) int64_t edgefleet_v1_now_ms(void);

/* ---- Safe wrappers -------------------------------------------------------------------------------
 * The input functions copy a value into `buf` and return its length, or one of these (nothing is
 * copied then; a value is never truncated). */

#define EF_ABSENT (-1)    /* ef_state only: the device has no state yet */
#define EF_TOO_LARGE (-2) /* the value is longer than `cap` */

/* A buffer's capacity as the ABI's i32 (a buffer over 2 GiB offers 2 GiB). */
static inline int32_t ef_cap(size_t cap) {
    return cap > 0x7fffffff ? 0x7fffffff : (int32_t)cap;
}

/* Interprets a copy function's result `len` for a buffer of `cap` bytes. */
static inline int32_t ef_copied(int32_t len, size_t cap) {
    if (len < 0) {
        return EF_ABSENT;
    }
    return (uint32_t)len <= cap ? len : EF_TOO_LARGE;
}

/* The device message payload. */
static inline int32_t ef_message(uint8_t *buf, size_t cap) {
    int32_t len = ef_copied(edgefleet_v1_message(buf, ef_cap(cap)), cap);
    return len == EF_ABSENT ? 0 : len;
}

/* The id of the device that sent the message (UTF-8, not NUL-terminated). */
static inline int32_t ef_device_id(uint8_t *buf, size_t cap) {
    int32_t len = ef_copied(edgefleet_v1_device_id(buf, ef_cap(cap)), cap);
    return len == EF_ABSENT ? 0 : len;
}

/* The channel the device published on, e.g. "telemetry" (UTF-8, not NUL-terminated). */
static inline int32_t ef_channel(uint8_t *buf, size_t cap) {
    int32_t len = ef_copied(edgefleet_v1_channel(buf, ef_cap(cap)), cap);
    return len == EF_ABSENT ? 0 : len;
}

/* The class config, CBOR as declared in the DeviceClass (empty when the class declares none). */
static inline int32_t ef_config(uint8_t *buf, size_t cap) {
    int32_t len = ef_copied(edgefleet_v1_config(buf, ef_cap(cap)), cap);
    return len == EF_ABSENT ? 0 : len;
}

/* This device's persisted state, or EF_ABSENT when it has none. */
static inline int32_t ef_state(uint8_t *buf, size_t cap) {
    return ef_copied(edgefleet_v1_state_get(buf, ef_cap(cap)), cap);
}

/* Replaces this device's state (committed only if the interaction succeeds). */
static inline void ef_set_state(const uint8_t *state, size_t len) {
    edgefleet_v1_state_set(state, (int32_t)len);
}

/* Sends a command payload to this interaction's device. */
static inline void ef_command(const uint8_t *payload, size_t len) {
    edgefleet_v1_command(payload, (int32_t)len);
}

/* Sends `payload` upstream on the class-relative `topic` (NUL-terminated, e.g. "telemetry"); the
 * topic must match the class's allowed topics or the interaction fails with ForbiddenTopic. */
static inline void ef_publish(const char *topic, const uint8_t *payload, size_t len) {
    size_t topic_len = 0;
    while (topic[topic_len] != '\0') {
        topic_len++;
    }
    edgefleet_v1_publish((const uint8_t *)topic, (int32_t)topic_len, payload, (int32_t)len);
}

/* Writes a NUL-terminated log line (the agent keeps 32 lines of up to 512 bytes per interaction). */
static inline void ef_log(int32_t level, const char *line) {
    size_t len = 0;
    while (line[len] != '\0') {
        len++;
    }
    edgefleet_v1_log(level, (const uint8_t *)line, (int32_t)len);
}

/* The interaction's wall-clock time in ms since the UNIX epoch (fixed for the interaction). */
static inline int64_t ef_now_ms(void) {
    return edgefleet_v1_now_ms();
}

/* ---- Sending what an ef_writer wrote: false (nothing sent) when it overflowed its buffer -------- */

static inline bool ef_command_cbor(const ef_writer *w) {
    if (w->full) {
        return false;
    }
    ef_command(w->start, ef_writer_len(w));
    return true;
}

static inline bool ef_publish_cbor(const char *topic, const ef_writer *w) {
    if (w->full) {
        return false;
    }
    ef_publish(topic, w->start, ef_writer_len(w));
    return true;
}

static inline bool ef_set_state_cbor(const ef_writer *w) {
    if (w->full) {
        return false;
    }
    ef_set_state(w->start, ef_writer_len(w));
    return true;
}

/* ---- The entry point ------------------------------------------------------------------------------
 * EF_HANDLER(fn), once per module at file scope, with `int32_t fn(void)` returning EF_HANDLED or a
 * reject code: exports it as `edgefleet_handle` and declares the ABI version in the `edgefleet_abi`
 * custom section (wasm-ld keeps a `.custom_section.<name>` section as the custom section <name>,
 * also under --strip-all). */

#define EF_STRINGIFY_(x) #x
#define EF_STRINGIFY(x) EF_STRINGIFY_(x)

#define EF_HANDLER(fn)                                                                             \
    __asm__(".section .custom_section.edgefleet_abi,\"\",@\n"                                      \
            "\t.int32 " EF_STRINGIFY(EDGEFLEET_ABI_VERSION) "\n"                                   \
            "\t.text\n");                                                                          \
    __attribute__((export_name("edgefleet_handle"))) int32_t edgefleet_handle(void);               \
    int32_t edgefleet_handle(void) {                                                               \
        return fn();                                                                               \
    }

#endif /* EDGEFLEET_H */
