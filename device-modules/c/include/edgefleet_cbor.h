/*
 * edgefleet_cbor.h — a small CBOR (RFC 8949) reader and writer for edgefleet device handlers.
 *
 * Freestanding C99: no libc, no allocation, every function `static inline` (what a handler does
 * not call costs it nothing). It reads what devices and the agent send, as the Rust guest SDK does:
 *
 *   - maps with text keys, definite or indefinite length; unknown keys are skipped (ef_skip skips any
 *     value: nested arrays and maps, tags, byte and text strings, simple values);
 *   - numbers in every CBOR encoding: unsigned and negative integers of 1 to 8 bytes, half, single
 *     and double floats (ef_read_number, ef_read_finite);
 *   - integers (ef_read_int, ef_read_uint), text (valid UTF-8, definite length, returned as a view
 *     into the input, not copied), booleans, arrays.
 *
 * Errors are sticky: the first failure records why (ef_reader.error, a static string such as
 * "missing kpa" or "expected a number") and every later read fails without reading, so a handler
 * decodes a whole payload and checks once. The writer works the same way: writes past the buffer set
 * ef_writer.full and are dropped.
 *
 *     ef_reader r;
 *     ef_reader_init(&r, message, len);
 *     ef_map map;
 *     ef_str key;
 *     double kpa = 0;
 *     bool have_kpa = false;
 *     ef_read_map(&r, &map);
 *     while (ef_map_next(&r, &map, &key)) {
 *         if (ef_str_eq(key, "kpa")) { kpa = ef_read_finite(&r); have_kpa = true; }
 *         else ef_skip(&r);
 *     }
 *     if (!have_kpa) ef_fail(&r, "missing kpa");
 *     if (!ef_finish(&r)) return EF_REJECT_MESSAGE;   // r.error says why
 *
 * This header builds anywhere (the native tests in device-modules/c/tests compile it for the host);
 * edgefleet.h, the guest ABI, is wasm32 only.
 */
#ifndef EDGEFLEET_CBOR_H
#define EDGEFLEET_CBOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Containers nested deeper than this inside a skipped value are an error (it bounds the stack). */
#define EF_CBOR_MAX_DEPTH 16

/* A view of text inside a CBOR input: `len` bytes at `ptr`, not NUL-terminated. */
typedef struct ef_str {
    const char *ptr;
    size_t len;
} ef_str;

/* True when `s` holds exactly the NUL-terminated `text`. */
static inline bool ef_str_eq(ef_str s, const char *text) {
    size_t i = 0;
    for (; i < s.len; i++) {
        if (text[i] == '\0' || text[i] != s.ptr[i]) {
            return false;
        }
    }
    return text[i] == '\0';
}

/* ---- Reader ----------------------------------------------------------------------------------- */

typedef struct ef_reader {
    const uint8_t *pos;
    const uint8_t *end;
    /* NULL while every read succeeded, else why the first one failed (a static string). */
    const char *error;
} ef_reader;

/* The state of a map or array being read: items left, or indefinite (ended by a break byte). */
typedef struct ef_map {
    uint64_t remaining;
    bool indefinite;
} ef_map;

typedef ef_map ef_array;

static inline void ef_reader_init(ef_reader *r, const uint8_t *bytes, size_t len) {
    r->pos = bytes;
    r->end = bytes + len;
    r->error = NULL;
}

/* Records `why` unless an earlier error is recorded already; returns false. */
static inline bool ef_fail(ef_reader *r, const char *why) {
    if (r->error == NULL) {
        r->error = why;
    }
    return false;
}

/* True when the whole input was read without an error; otherwise false, with the error recorded
 * ("trailing bytes after the CBOR value" when the value was read but the input goes on). */
static inline bool ef_finish(ef_reader *r) {
    if (r->error != NULL) {
        return false;
    }
    if (r->pos != r->end) {
        return ef_fail(r, "trailing bytes after the CBOR value");
    }
    return true;
}

/* Consumes `n` bytes. */
static inline bool ef_advance(ef_reader *r, uint64_t n) {
    if (r->error != NULL) {
        return false;
    }
    if (n > (uint64_t)(r->end - r->pos)) {
        return ef_fail(r, "unexpected end of input");
    }
    r->pos += n;
    return true;
}

/* Reads an item's head: its major type (0–7), additional information (0–31) and argument (the
 * value, length or count; the raw bits of a float). Additional information 31 (indefinite length,
 * or a break) has argument 0. */
static inline bool ef_head(ef_reader *r, uint8_t *major, uint8_t *info, uint64_t *arg) {
    if (!ef_advance(r, 1)) {
        return false;
    }
    uint8_t initial = r->pos[-1];
    *major = initial >> 5;
    *info = initial & 0x1f;
    *arg = *info;
    if (*info < 24) {
        return true;
    }
    if (*info == 31) {
        *arg = 0;
        if (*major == 0 || *major == 1 || *major == 6) {
            return ef_fail(r, "malformed CBOR: indefinite length on a type without one");
        }
        return true;
    }
    if (*info > 27) {
        return ef_fail(r, "malformed CBOR: reserved additional information");
    }
    unsigned width = 1u << (*info - 24);
    const uint8_t *bytes = r->pos;
    if (!ef_advance(r, width)) {
        return false;
    }
    *arg = 0;
    for (unsigned i = 0; i < width; i++) {
        *arg = (*arg << 8) | bytes[i];
    }
    return true;
}

/* True when the next byte is a break (0xff), which ends an indefinite-length item. */
static inline bool ef_at_break(const ef_reader *r) {
    return r->error == NULL && r->pos < r->end && *r->pos == 0xff;
}

/* An IEEE 754 half-precision value, widened exactly. */
static inline double ef_half_to_double(uint16_t bits) {
    union {
        uint64_t u;
        double d;
    } out;
    uint64_t exponent = (bits >> 10) & 0x1f;
    uint64_t fraction = bits & 0x3ff;
    double magnitude;
    if (exponent == 0) {
        magnitude = (double)fraction / 16777216.0; /* subnormal: fraction × 2^-24 */
    } else if (exponent == 0x1f) {
        out.u = fraction == 0 ? 0x7ff0000000000000ull : 0x7ff8000000000000ull; /* inf, NaN */
        magnitude = out.d;
    } else {
        out.u = ((exponent + 1008) << 52) | (fraction << 42); /* rebias 15 → 1023, widen 10 → 52 */
        magnitude = out.d;
    }
    return (bits & 0x8000) ? -magnitude : magnitude;
}

/* Any CBOR number (unsigned or negative integer, half, single or double float) as a double. On error
 * returns 0 with the error recorded. */
static inline double ef_read_number(ef_reader *r) {
    uint8_t major, info;
    uint64_t arg;
    if (!ef_head(r, &major, &info, &arg)) {
        return 0;
    }
    if (major == 0) {
        return (double)arg;
    }
    if (major == 1) {
        return -1.0 - (double)arg;
    }
    if (major == 7 && info == 25) {
        return ef_half_to_double((uint16_t)arg);
    }
    if (major == 7 && info == 26) {
        union {
            uint32_t u;
            float f;
        } single = {(uint32_t)arg};
        return single.f;
    }
    if (major == 7 && info == 27) {
        union {
            uint64_t u;
            double d;
        } dbl = {arg};
        return dbl.d;
    }
    ef_fail(r, "expected a number");
    return 0;
}

/* A finite number: NaN and infinities are an error, as in the Rust SDK's cbor::finite. */
static inline double ef_read_finite(ef_reader *r) {
    double value = ef_read_number(r);
    if (value != value || value - value != 0) {
        ef_fail(r, "expected a finite number");
        return 0;
    }
    return value;
}

/* An integer (major type 0 or 1) that fits an int64_t. */
static inline int64_t ef_read_int(ef_reader *r) {
    uint8_t major, info;
    uint64_t arg;
    if (!ef_head(r, &major, &info, &arg)) {
        return 0;
    }
    if (major > 1) {
        ef_fail(r, "expected an integer");
        return 0;
    }
    if (arg > (uint64_t)INT64_MAX) {
        ef_fail(r, "integer out of range");
        return 0;
    }
    return major == 0 ? (int64_t)arg : -1 - (int64_t)arg;
}

/* An unsigned integer (major type 0). */
static inline uint64_t ef_read_uint(ef_reader *r) {
    uint8_t major, info;
    uint64_t arg;
    if (!ef_head(r, &major, &info, &arg)) {
        return 0;
    }
    if (major != 0) {
        ef_fail(r, "expected an unsigned integer");
        return 0;
    }
    return arg;
}

static inline bool ef_read_bool(ef_reader *r) {
    uint8_t major, info;
    uint64_t arg;
    if (!ef_head(r, &major, &info, &arg)) {
        return false;
    }
    if (major != 7 || (info != 20 && info != 21)) {
        return ef_fail(r, "expected a bool");
    }
    return info == 21;
}

/* True when `bytes` is well-formed UTF-8 (no overlong forms, surrogates or code points past U+10FFFF). */
static inline bool ef_utf8_valid(const uint8_t *bytes, size_t len) {
    size_t i = 0;
    while (i < len) {
        uint8_t b = bytes[i];
        size_t extra;
        uint32_t cp;
        if (b < 0x80) {
            i++;
            continue;
        } else if (b >= 0xc2 && b <= 0xdf) {
            extra = 1, cp = b & 0x1f;
        } else if (b >= 0xe0 && b <= 0xef) {
            extra = 2, cp = b & 0x0f;
        } else if (b >= 0xf0 && b <= 0xf4) {
            extra = 3, cp = b & 0x07;
        } else {
            return false;
        }
        if (len - i <= extra) {
            return false;
        }
        for (size_t k = 1; k <= extra; k++) {
            if ((bytes[i + k] & 0xc0) != 0x80) {
                return false;
            }
            cp = (cp << 6) | (bytes[i + k] & 0x3f);
        }
        if ((extra == 2 && cp < 0x800) || (extra == 3 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff)) {
            return false;
        }
        i += extra + 1;
    }
    return true;
}

/* Text of definite length, as a view into the input. On error the view is empty. */
static inline ef_str ef_read_text(ef_reader *r) {
    ef_str text = {"", 0};
    uint8_t major, info;
    uint64_t arg;
    if (!ef_head(r, &major, &info, &arg)) {
        return text;
    }
    if (major != 3) {
        ef_fail(r, "expected text");
        return text;
    }
    if (info == 31) {
        ef_fail(r, "indefinite-length text is not supported");
        return text;
    }
    const uint8_t *bytes = r->pos;
    if (!ef_advance(r, arg)) {
        return text;
    }
    if (!ef_utf8_valid(bytes, (size_t)arg)) {
        ef_fail(r, "text is not UTF-8");
        return text;
    }
    text.ptr = (const char *)bytes;
    text.len = (size_t)arg;
    return text;
}

/* Reads the head of a container of major type `major` (4 array, 5 map) into `c`. */
static inline bool ef_read_container(ef_reader *r, uint8_t major, ef_map *c, const char *expected) {
    uint8_t found, info;
    c->remaining = 0;
    c->indefinite = false;
    if (!ef_head(r, &found, &info, &c->remaining)) {
        return false;
    }
    if (found != major) {
        return ef_fail(r, expected);
    }
    c->indefinite = info == 31;
    return true;
}

/* Whether the container `c` has another item; consumes the break of an indefinite one. */
static inline bool ef_container_next(ef_reader *r, ef_map *c) {
    if (r->error != NULL) {
        return false;
    }
    if (c->indefinite) {
        if (r->pos == r->end) {
            return ef_fail(r, "unexpected end of input");
        }
        if (*r->pos == 0xff) {
            r->pos++;
            return false;
        }
        return true;
    }
    if (c->remaining == 0) {
        return false;
    }
    c->remaining--;
    return true;
}

/* Starts reading a map; then call ef_map_next until it returns false. */
static inline bool ef_read_map(ef_reader *r, ef_map *map) {
    return ef_read_container(r, 5, map, "expected a map");
}

/* Reads the next key of `map` into `key`, leaving the reader at its value, which the caller must read
 * or ef_skip. False at the end of the map, and on an error (a key that is not text, say). */
static inline bool ef_map_next(ef_reader *r, ef_map *map, ef_str *key) {
    if (!ef_container_next(r, map)) {
        return false;
    }
    *key = ef_read_text(r);
    return r->error == NULL;
}

/* Starts reading an array; then call ef_array_next before each item until it returns false. */
static inline bool ef_read_array(ef_reader *r, ef_array *array) {
    return ef_read_container(r, 4, array, "expected an array");
}

/* Whether `array` has another item (the reader is then at it). */
static inline bool ef_array_next(ef_reader *r, ef_array *array) {
    return ef_container_next(r, array);
}

static inline bool ef_skip_nested(ef_reader *r, unsigned depth) {
    uint8_t major, info;
    uint64_t arg;
    if (depth > EF_CBOR_MAX_DEPTH) {
        return ef_fail(r, "CBOR nested too deeply");
    }
    if (!ef_head(r, &major, &info, &arg)) {
        return false;
    }
    switch (major) {
    case 2:
    case 3:
        if (info != 31) {
            return ef_advance(r, arg);
        }
        /* Indefinite length: definite chunks of the same type, then a break. */
        while (!ef_at_break(r)) {
            uint8_t chunk_major, chunk_info;
            if (!ef_head(r, &chunk_major, &chunk_info, &arg)) {
                return false;
            }
            if (chunk_major != major || chunk_info == 31) {
                return ef_fail(r, "malformed CBOR: bad chunk in an indefinite-length string");
            }
            if (!ef_advance(r, arg)) {
                return false;
            }
        }
        return ef_advance(r, 1);
    case 4:
    case 5:
        if (info == 31) {
            while (!ef_at_break(r)) {
                if (!ef_skip_nested(r, depth + 1)) {
                    return false;
                }
            }
            return ef_advance(r, 1);
        }
        /* Every item takes at least a byte: a count beyond the input is truncated, say so early. */
        if (arg > (uint64_t)(r->end - r->pos)) {
            return ef_fail(r, "unexpected end of input");
        }
        for (uint64_t items = major == 5 ? 2 * arg : arg; items > 0; items--) {
            if (!ef_skip_nested(r, depth + 1)) {
                return false;
            }
        }
        return true;
    case 6:
        return ef_skip_nested(r, depth + 1); /* a tag: skip the tagged value */
    case 7:
        if (info == 31) {
            return ef_fail(r, "malformed CBOR: unexpected break");
        }
        return true;
    default:
        return true; /* integers: the head was all of it */
    }
}

/* Skips one value of any type, including nested containers. */
static inline bool ef_skip(ef_reader *r) {
    return ef_skip_nested(r, 0);
}

/* ---- Writer ----------------------------------------------------------------------------------- */

typedef struct ef_writer {
    uint8_t *start;
    uint8_t *pos;
    uint8_t *end;
    /* Set when a write did not fit; the output is then incomplete and must not be sent. */
    bool full;
} ef_writer;

static inline void ef_writer_init(ef_writer *w, uint8_t *buf, size_t cap) {
    w->start = buf;
    w->pos = buf;
    w->end = buf + cap;
    w->full = false;
}

/* The bytes written so far. */
static inline size_t ef_writer_len(const ef_writer *w) {
    return (size_t)(w->pos - w->start);
}

static inline void ef_write_raw(ef_writer *w, const uint8_t *bytes, size_t len) {
    if (w->full || len > (size_t)(w->end - w->pos)) {
        w->full = true;
        return;
    }
    for (size_t i = 0; i < len; i++) {
        w->pos[i] = bytes[i];
    }
    w->pos += len;
}

/* `initial` followed by the `width` low bytes of `arg`, big-endian. */
static inline void ef_write_be(ef_writer *w, uint8_t initial, uint64_t arg, size_t width) {
    uint8_t head[9];
    head[0] = initial;
    for (size_t i = 0; i < width; i++) {
        head[width - i] = (uint8_t)(arg >> (8 * i));
    }
    ef_write_raw(w, head, width + 1);
}

/* An item head with `arg` in its shortest encoding (RFC 8949's preferred serialization). */
static inline void ef_write_head(ef_writer *w, uint8_t major, uint64_t arg) {
    uint8_t initial = (uint8_t)(major << 5);
    if (arg < 24) {
        ef_write_be(w, initial | (uint8_t)arg, 0, 0);
    } else if (arg <= 0xff) {
        ef_write_be(w, initial | 24, arg, 1);
    } else if (arg <= 0xffff) {
        ef_write_be(w, initial | 25, arg, 2);
    } else if (arg <= 0xffffffffu) {
        ef_write_be(w, initial | 26, arg, 4);
    } else {
        ef_write_be(w, initial | 27, arg, 8);
    }
}

static inline void ef_write_uint(ef_writer *w, uint64_t value) {
    ef_write_head(w, 0, value);
}

static inline void ef_write_int(ef_writer *w, int64_t value) {
    if (value >= 0) {
        ef_write_head(w, 0, (uint64_t)value);
    } else {
        ef_write_head(w, 1, (uint64_t)(-1 - value));
    }
}

static inline void ef_write_bool(ef_writer *w, bool value) {
    uint8_t byte = value ? 0xf5 : 0xf4;
    ef_write_raw(w, &byte, 1);
}

static inline void ef_write_null(ef_writer *w) {
    uint8_t byte = 0xf6;
    ef_write_raw(w, &byte, 1);
}

/* A double as a single-precision float when that holds it exactly, else as a double. */
static inline void ef_write_float(ef_writer *w, double value) {
    union {
        float f;
        uint32_t u;
    } single = {(float)value};
    union {
        double d;
        uint64_t u;
    } dbl = {value};
    if ((double)single.f == value) {
        ef_write_be(w, 0xfa, single.u, 4);
    } else {
        ef_write_be(w, 0xfb, dbl.u, 8);
    }
}

/* `len` bytes of UTF-8 text (the caller's to be valid). */
static inline void ef_write_text_n(ef_writer *w, const char *text, size_t len) {
    ef_write_head(w, 3, len);
    ef_write_raw(w, (const uint8_t *)text, len);
}

/* NUL-terminated UTF-8 text, e.g. a map key. */
static inline void ef_write_text(ef_writer *w, const char *text) {
    size_t len = 0;
    while (text[len] != '\0') {
        len++;
    }
    ef_write_text_n(w, text, len);
}

/* A map of `pairs` key/value pairs: write them next, key then value. */
static inline void ef_write_map(ef_writer *w, uint64_t pairs) {
    ef_write_head(w, 5, pairs);
}

/* An array of `items` items: write them next. */
static inline void ef_write_array(ef_writer *w, uint64_t items) {
    ef_write_head(w, 4, items);
}

#endif /* EDGEFLEET_CBOR_H */
