/*
 * Native tests of edgefleet_cbor.h: every check runs on the host (the catalog's test
 * `the_c_cbor_library_passes_its_native_tests` builds this file with clang and runs it). Exits 1
 * after printing each failed check, 0 when all pass.
 */
#include <stdio.h>
#include <string.h>

#include "edgefleet_cbor.h"

static int checks, failures;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        checks++;                                                                                  \
        if (!(cond)) {                                                                             \
            failures++;                                                                            \
            printf("%s:%d: failed: %s\n", __FILE__, __LINE__, #cond);                              \
        }                                                                                          \
    } while (0)

#define BYTES(...) ((const uint8_t[]){__VA_ARGS__}), sizeof((const uint8_t[]){__VA_ARGS__})

static ef_reader reader(const uint8_t *bytes, size_t len) {
    ef_reader r;
    ef_reader_init(&r, bytes, len);
    return r;
}

/* The number in `bytes`, which must be exactly one number; NaN (and a failure) otherwise. */
static double number(const uint8_t *bytes, size_t len) {
    ef_reader r = reader(bytes, len);
    double value = ef_read_number(&r);
    return ef_finish(&r) ? value : __builtin_nan("");
}

static const char *error_of_number(const uint8_t *bytes, size_t len) {
    ef_reader r = reader(bytes, len);
    ef_read_number(&r);
    ef_finish(&r);
    return r.error ? r.error : "";
}

static void numbers_of_every_cbor_width_decode(void) {
    CHECK(number(BYTES(0x15)) == 21.0);
    CHECK(number(BYTES(0x18, 0xff)) == 255.0);
    CHECK(number(BYTES(0x19, 0x03, 0xe8)) == 1000.0);
    CHECK(number(BYTES(0x1a, 0x00, 0x01, 0x86, 0xa0)) == 100000.0);
    CHECK(number(BYTES(0x1b, 0, 0, 0, 1, 0, 0, 0, 0)) == 4294967296.0);
    CHECK(number(BYTES(0x38, 0x13)) == -20.0);
    CHECK(number(BYTES(0x3b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)) == -18446744073709551616.0);
    /* 21.5 as half, single and double. */
    CHECK(number(BYTES(0xf9, 0x4d, 0x60)) == 21.5);
    CHECK(number(BYTES(0xfa, 0x41, 0xac, 0x00, 0x00)) == 21.5);
    CHECK(number(BYTES(0xfb, 0x40, 0x35, 0x80, 0, 0, 0, 0, 0)) == 21.5);
    CHECK(strcmp(error_of_number(BYTES(0x63, 'a', 'b', 'c')), "expected a number") == 0);
    CHECK(strcmp(error_of_number(BYTES(0xf5)), "expected a number") == 0);
    CHECK(strcmp(error_of_number(BYTES(0xf9, 0x4d)), "unexpected end of input") == 0);
    CHECK(strcmp(error_of_number(BYTES(0x1c)), "malformed CBOR: reserved additional information") == 0);
    CHECK(strcmp(error_of_number(BYTES(0x1f)), "malformed CBOR: indefinite length on a type without one") == 0);
    CHECK(strcmp(error_of_number(BYTES(0x01, 0x02)), "trailing bytes after the CBOR value") == 0);
    CHECK(strcmp(error_of_number((const uint8_t *)"", 0), "unexpected end of input") == 0);
}

static void halves_widen_exactly(void) {
    CHECK(ef_half_to_double(0x3c00) == 1.0);
    CHECK(ef_half_to_double(0xc000) == -2.0);
    CHECK(ef_half_to_double(0x7bff) == 65504.0);
    CHECK(ef_half_to_double(0x0001) == 1.0 / 16777216.0);
    CHECK(ef_half_to_double(0x0400) == 1.0 / 16384.0);
    CHECK(ef_half_to_double(0xfc00) == -__builtin_inf());
    double nan = ef_half_to_double(0x7e00);
    CHECK(nan != nan);
    CHECK(ef_half_to_double(0x8000) == 0.0);
}

static void finite_rejects_nan_and_infinity(void) {
    const uint8_t *inputs[] = {(const uint8_t[]){0xf9, 0x7e, 0x00}, (const uint8_t[]){0xf9, 0x7c, 0x00},
                               (const uint8_t[]){0xf9, 0xfc, 0x00}};
    for (size_t i = 0; i < 3; i++) {
        ef_reader r = reader(inputs[i], 3);
        CHECK(ef_read_finite(&r) == 0);
        CHECK(r.error != NULL && strcmp(r.error, "expected a finite number") == 0);
    }
    ef_reader r = reader(BYTES(0x07));
    CHECK(ef_read_finite(&r) == 7.0 && ef_finish(&r));
}

static void integers_decode_in_range(void) {
    ef_reader r = reader(BYTES(0x1b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff));
    CHECK(ef_read_int(&r) == INT64_MAX && ef_finish(&r));
    r = reader(BYTES(0x3b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff));
    CHECK(ef_read_int(&r) == INT64_MIN && ef_finish(&r));
    r = reader(BYTES(0x1b, 0x80, 0, 0, 0, 0, 0, 0, 0));
    CHECK(ef_read_int(&r) == 0 && strcmp(r.error, "integer out of range") == 0);
    r = reader(BYTES(0xf9, 0x3c, 0x00));
    CHECK(ef_read_int(&r) == 0 && strcmp(r.error, "expected an integer") == 0);
    r = reader(BYTES(0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff));
    CHECK(ef_read_uint(&r) == UINT64_MAX && ef_finish(&r));
    r = reader(BYTES(0x20));
    CHECK(ef_read_uint(&r) == 0 && strcmp(r.error, "expected an unsigned integer") == 0);
    r = reader(BYTES(0xf5, 0xf4, 0xf6));
    CHECK(ef_read_bool(&r) == true);
    CHECK(ef_read_bool(&r) == false);
    CHECK(ef_read_bool(&r) == false && strcmp(r.error, "expected a bool") == 0);
}

static void text_must_be_definite_utf8(void) {
    ef_reader r = reader(BYTES(0x66, 'd', 'o', 'o', 'r', '-', '7'));
    ef_str text = ef_read_text(&r);
    CHECK(ef_finish(&r) && ef_str_eq(text, "door-7"));
    CHECK(!ef_str_eq(text, "door-"));
    CHECK(!ef_str_eq(text, "door-77"));
    r = reader(BYTES(0x64, 0xc3, 0xa9, 0xe2, 0x82)); /* "é" then a truncated sequence */
    ef_read_text(&r);
    CHECK(r.error != NULL && strcmp(r.error, "text is not UTF-8") == 0);
    const uint8_t *invalid[] = {(const uint8_t[]){0x62, 0xc0, 0x80},       /* overlong NUL */
                                (const uint8_t[]){0x63, 0xed, 0xa0, 0x80}, /* a surrogate */
                                (const uint8_t[]){0x61, 0xff}};
    size_t lens[] = {3, 4, 2};
    for (size_t i = 0; i < 3; i++) {
        r = reader(invalid[i], lens[i]);
        ef_read_text(&r);
        CHECK(r.error != NULL && strcmp(r.error, "text is not UTF-8") == 0);
    }
    r = reader(BYTES(0x64, 0xf0, 0x9f, 0x8c, 0xa1)); /* U+1F321 */
    text = ef_read_text(&r);
    CHECK(ef_finish(&r) && text.len == 4);
    r = reader(BYTES(0x7f, 0x61, 'a', 0xff));
    ef_read_text(&r);
    CHECK(strcmp(r.error, "indefinite-length text is not supported") == 0);
    r = reader(BYTES(0x65, 'a', 'b'));
    ef_read_text(&r);
    CHECK(strcmp(r.error, "unexpected end of input") == 0);
}

typedef struct entries {
    double a;
    bool b;
    int seen_a, seen_b;
    const char *error;
    size_t position;
} entries;

static entries read_entries(const uint8_t *bytes, size_t len) {
    entries e = {0, false, 0, 0, NULL, 0};
    ef_reader r = reader(bytes, len);
    ef_map map;
    ef_str key;
    ef_read_map(&r, &map);
    while (ef_map_next(&r, &map, &key)) {
        if (ef_str_eq(key, "a")) {
            e.a = ef_read_number(&r);
            e.seen_a++;
        } else if (ef_str_eq(key, "b")) {
            e.b = ef_read_bool(&r);
            e.seen_b++;
        } else {
            ef_skip(&r);
        }
    }
    e.error = r.error;
    e.position = (size_t)(r.pos - bytes);
    return e;
}

static void maps_visit_known_keys_and_skip_the_rest(void) {
    /* {"x": [1, "nested"], "b": true, "a": 2.5f} */
    entries e = read_entries(BYTES(0xa3, 0x61, 'x', 0x82, 0x01, 0x66, 'n', 'e', 's', 't', 'e', 'd', 0x61, 'b',
                                   0xf5, 0x61, 'a', 0xfa, 0x40, 0x20, 0x00, 0x00));
    CHECK(e.error == NULL && e.a == 2.5 && e.b && e.seen_a == 1 && e.seen_b == 1 && e.position == 22);
    /* {_ "a": 1, "zz": null} followed by a byte that is not part of the map */
    e = read_entries(BYTES(0xbf, 0x61, 'a', 0x01, 0x62, 'z', 'z', 0xf6, 0xff, 0x00));
    CHECK(e.error == NULL && e.a == 1.0 && e.seen_b == 0 && e.position == 9);
    /* Values of every kind skipped: a tag, a byte string, an indefinite text, nested maps. */
    e = read_entries(BYTES(0xa5, 0x61, 'u', 0xc1, 0x1a, 0x5f, 0x00, 0x00, 0x00, 0x61, 'v', 0x42, 0x01, 0x02,
                           0x61, 'w', 0x7f, 0x61, 'h', 0x62, 'i', '!', 0xff, 0x61, 'm', 0xbf, 0x61, 'k',
                           0xa1, 0x61, 'j', 0x80, 0xff, 0x61, 'a', 0x20));
    CHECK(e.error == NULL && e.a == -1.0 && e.seen_a == 1);
}

static void maps_reject_non_maps_bad_keys_and_truncation(void) {
    CHECK(strcmp(read_entries(BYTES(0x80)).error, "expected a map") == 0);
    CHECK(strcmp(read_entries(BYTES(0xa1, 0x01, 0x01)).error, "expected text") == 0);
    CHECK(strcmp(read_entries(BYTES(0xa2, 0x61, 'a', 0x01)).error, "unexpected end of input") == 0);
    CHECK(strcmp(read_entries(BYTES(0xbf, 0x61, 'a', 0x01)).error, "unexpected end of input") == 0);
    CHECK(strcmp(read_entries(BYTES(0xa1, 0x61, 'x', 0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)).error,
                 "unexpected end of input") == 0);
    CHECK(strcmp(read_entries(BYTES(0xa1, 0x61, 'x', 0xff)).error, "malformed CBOR: unexpected break") == 0);
    CHECK(strcmp(read_entries(BYTES(0xa1, 0x61, 'x', 0x5f, 0x61, 'a', 0xff)).error,
                 "malformed CBOR: bad chunk in an indefinite-length string") == 0);
}

static void skipping_is_bounded_in_depth(void) {
    uint8_t nested[EF_CBOR_MAX_DEPTH + 2];
    for (size_t depth = EF_CBOR_MAX_DEPTH; depth <= EF_CBOR_MAX_DEPTH + 1; depth++) {
        /* `depth` arrays of one item around a 0: the innermost value is `depth` levels deep. */
        memset(nested, 0x81, depth);
        nested[depth] = 0x00;
        ef_reader r = reader(nested, depth + 1);
        ef_skip(&r);
        if (depth == EF_CBOR_MAX_DEPTH) {
            CHECK(ef_finish(&r));
        } else {
            CHECK(r.error != NULL && strcmp(r.error, "CBOR nested too deeply") == 0);
        }
    }
}

static void errors_are_sticky(void) {
    ef_reader r = reader(BYTES(0x61, 'x', 0x05));
    CHECK(ef_read_number(&r) == 0);
    const char *first = r.error;
    CHECK(first != NULL && strcmp(first, "expected a number") == 0);
    CHECK(ef_read_uint(&r) == 0);
    CHECK(r.error == first);
    ef_fail(&r, "another reason");
    CHECK(r.error == first && !ef_finish(&r));
}

static void arrays_read_definite_and_indefinite(void) {
    ef_reader r = reader(BYTES(0x83, 0x01, 0x9f, 0x02, 0x03, 0xff, 0x04));
    ef_array outer, inner;
    double sum = 0;
    int items = 0;
    ef_read_array(&r, &outer);
    while (ef_array_next(&r, &outer)) {
        items++;
        if (items == 2) {
            ef_read_array(&r, &inner);
            while (ef_array_next(&r, &inner)) {
                sum += ef_read_number(&r);
            }
        } else {
            sum += ef_read_number(&r);
        }
    }
    CHECK(ef_finish(&r) && items == 3 && sum == 10.0);
    r = reader(BYTES(0xa0));
    ef_read_array(&r, &outer);
    CHECK(strcmp(r.error, "expected an array") == 0);
}

/* `expected` equals what `w` wrote. */
static bool wrote(const ef_writer *w, const uint8_t *expected, size_t len) {
    return !w->full && ef_writer_len(w) == len && memcmp(w->start, expected, len) == 0;
}

static void the_writer_uses_the_shortest_heads(void) {
    uint8_t buf[64];
    ef_writer w;
    struct {
        uint64_t value;
        size_t len;
        uint8_t bytes[9];
    } uints[] = {
        {0, 1, {0x00}},
        {23, 1, {0x17}},
        {24, 2, {0x18, 24}},
        {255, 2, {0x18, 0xff}},
        {256, 3, {0x19, 0x01, 0x00}},
        {65535, 3, {0x19, 0xff, 0xff}},
        {65536, 5, {0x1a, 0x00, 0x01, 0x00, 0x00}},
        {4294967295u, 5, {0x1a, 0xff, 0xff, 0xff, 0xff}},
        {4294967296ull, 9, {0x1b, 0, 0, 0, 1, 0, 0, 0, 0}},
        {UINT64_MAX, 9, {0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
    };
    for (size_t i = 0; i < sizeof uints / sizeof uints[0]; i++) {
        ef_writer_init(&w, buf, sizeof buf);
        ef_write_uint(&w, uints[i].value);
        CHECK(wrote(&w, uints[i].bytes, uints[i].len));
    }
    ef_writer_init(&w, buf, sizeof buf);
    ef_write_int(&w, -1);
    ef_write_int(&w, -24);
    ef_write_int(&w, -25);
    ef_write_int(&w, 1700000000000);
    ef_write_int(&w, INT64_MIN);
    CHECK(wrote(&w, BYTES(0x20, 0x37, 0x38, 0x18, 0x1b, 0x00, 0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, 0x3b, 0x7f,
                          0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)));
}

static void the_writer_writes_every_type(void) {
    uint8_t buf[64];
    ef_writer w;
    ef_writer_init(&w, buf, sizeof buf);
    ef_write_map(&w, 3);
    ef_write_text(&w, "kpa");
    ef_write_float(&w, 21.5);
    ef_write_text(&w, "x");
    ef_write_float(&w, 0.1);
    ef_write_text_n(&w, "okay", 2);
    ef_write_array(&w, 3);
    ef_write_bool(&w, true);
    ef_write_bool(&w, false);
    ef_write_null(&w);
    CHECK(wrote(&w, BYTES(0xa3, 0x63, 'k', 'p', 'a', 0xfa, 0x41, 0xac, 0x00, 0x00, 0x61, 'x', 0xfb, 0x3f, 0xb9,
                          0x99, 0x99, 0x99, 0x99, 0x99, 0x9a, 0x62, 'o', 'k', 0x83, 0xf5, 0xf4, 0xf6)));
    /* What was written reads back. */
    ef_reader r = reader(w.start, ef_writer_len(&w));
    ef_map map;
    ef_str key;
    double kpa = 0, x = 0;
    ef_read_map(&r, &map);
    while (ef_map_next(&r, &map, &key)) {
        if (ef_str_eq(key, "kpa")) {
            kpa = ef_read_finite(&r);
        } else if (ef_str_eq(key, "x")) {
            x = ef_read_finite(&r);
        } else {
            ef_skip(&r);
        }
    }
    CHECK(ef_finish(&r) && kpa == 21.5 && x == 0.1);
}

static void a_full_writer_drops_what_does_not_fit(void) {
    uint8_t buf[4];
    ef_writer w;
    ef_writer_init(&w, buf, sizeof buf);
    ef_write_text(&w, "abc");
    CHECK(!w.full && ef_writer_len(&w) == 4);
    ef_write_bool(&w, true);
    CHECK(w.full && ef_writer_len(&w) == 4);
    ef_writer_init(&w, buf, sizeof buf);
    ef_write_float(&w, 0.1); /* 9 bytes */
    ef_write_bool(&w, true); /* would fit, but the output is already incomplete */
    CHECK(w.full && ef_writer_len(&w) == 0);
}

int main(void) {
    numbers_of_every_cbor_width_decode();
    halves_widen_exactly();
    finite_rejects_nan_and_infinity();
    integers_decode_in_range();
    text_must_be_definite_utf8();
    maps_visit_known_keys_and_skip_the_rest();
    maps_reject_non_maps_bad_keys_and_truncation();
    skipping_is_bounded_in_depth();
    errors_are_sticky();
    arrays_read_definite_and_indefinite();
    the_writer_uses_the_shortest_heads();
    the_writer_writes_every_type();
    a_full_writer_drops_what_does_not_fit();
    printf("cbor_test: %d checks, %d failures\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
