/*
 * Pressure sensor handler, written in C over the C SDK (device-modules/c/include): a threshold alarm
 * with hysteresis.
 *
 * The sensor publishes readings on `telemetry` ({"kpa": number}); a message on another channel is
 * rejected (EF_REJECT_MESSAGE). The alarm is raised when the pressure rises above `high_kpa` or falls
 * below `low_kpa`, and cleared only once it is back inside the band narrowed by the hysteresis,
 * [low_kpa + hysteresis_kpa, high_kpa - hysteresis_kpa], so a reading hovering at a threshold does not
 * toggle it. In between, the alarm is kept.
 *
 * On every reading the handler publishes `telemetry`. When the alarm changes it commands the device
 * (siren, relief valve), persists the alarm and when it changed, and logs the change.
 *
 *   payload                 key              type                 notes
 *   reading (device →)      kpa              number               required
 *   config                  high_kpa         number               default 500
 *                           low_kpa          number               optional: no low alarm without it
 *                           hysteresis_kpa   number >= 0          default 10; the clear band must not
 *                                                                 be empty (low + h <= high - h)
 *   state                   alarm            bool                 required (no state: off)
 *                           since_ms         integer              when the alarm last changed
 *   command (on a change)   alarm            bool                 the new alarm
 *                           kpa              number               the reading that changed it
 *   telemetry (every one)   device           text                 the device id
 *                           kpa              number
 *                           alarm            bool                 after this reading
 *                           since_ms         integer              when the alarm last changed (0: never)
 *
 * Numbers may come in any CBOR encoding; NaN and infinities are rejected; unknown keys are ignored.
 */
#include "edgefleet.h"

typedef struct config {
    double high_kpa;
    double low_kpa;
    bool has_low;
    double hysteresis_kpa;
} config;

typedef struct state {
    bool alarm;
    int64_t since_ms;
} state;

/* The reading's `kpa`. */
static bool read_reading(const uint8_t *bytes, size_t len, double *kpa) {
    ef_reader r;
    ef_map map;
    ef_str key;
    bool have_kpa = false;
    ef_reader_init(&r, bytes, len);
    ef_read_map(&r, &map);
    while (ef_map_next(&r, &map, &key)) {
        if (ef_str_eq(key, "kpa")) {
            *kpa = ef_read_finite(&r);
            have_kpa = true;
        } else {
            ef_skip(&r);
        }
    }
    if (!have_kpa) {
        ef_fail(&r, "missing kpa");
    }
    return ef_finish(&r);
}

/* The class config; an empty config is all defaults. */
static bool read_config(const uint8_t *bytes, size_t len, config *c) {
    ef_reader r;
    ef_map map;
    ef_str key;
    c->high_kpa = 500.0;
    c->low_kpa = 0.0;
    c->has_low = false;
    c->hysteresis_kpa = 10.0;
    if (len == 0) {
        return true;
    }
    ef_reader_init(&r, bytes, len);
    ef_read_map(&r, &map);
    while (ef_map_next(&r, &map, &key)) {
        if (ef_str_eq(key, "high_kpa")) {
            c->high_kpa = ef_read_finite(&r);
        } else if (ef_str_eq(key, "low_kpa")) {
            c->low_kpa = ef_read_finite(&r);
            c->has_low = true;
        } else if (ef_str_eq(key, "hysteresis_kpa")) {
            c->hysteresis_kpa = ef_read_finite(&r);
        } else {
            ef_skip(&r);
        }
    }
    if (c->hysteresis_kpa < 0) {
        ef_fail(&r, "negative hysteresis_kpa");
    }
    if (c->has_low && c->low_kpa + c->hysteresis_kpa > c->high_kpa - c->hysteresis_kpa) {
        ef_fail(&r, "empty clear band: low_kpa + hysteresis_kpa > high_kpa - hysteresis_kpa");
    }
    return ef_finish(&r);
}

/* The device state; no state is an alarm that never went off. */
static bool read_state(const uint8_t *bytes, int32_t len, state *s) {
    ef_reader r;
    ef_map map;
    ef_str key;
    bool have_alarm = false;
    s->alarm = false;
    s->since_ms = 0;
    if (len == EF_ABSENT) {
        return true;
    }
    ef_reader_init(&r, bytes, (size_t)len);
    ef_read_map(&r, &map);
    while (ef_map_next(&r, &map, &key)) {
        if (ef_str_eq(key, "alarm")) {
            s->alarm = ef_read_bool(&r);
            have_alarm = true;
        } else if (ef_str_eq(key, "since_ms")) {
            s->since_ms = ef_read_int(&r);
        } else {
            ef_skip(&r);
        }
    }
    if (!have_alarm) {
        ef_fail(&r, "missing alarm");
    }
    return ef_finish(&r);
}

/* The alarm after a reading of `kpa`, given the current one. */
static bool next_alarm(bool alarm, double kpa, const config *c) {
    bool above = kpa > c->high_kpa;
    bool below = c->has_low && kpa < c->low_kpa;
    if (above || below) {
        return true;
    }
    bool clear = kpa <= c->high_kpa - c->hysteresis_kpa &&
                 (!c->has_low || kpa >= c->low_kpa + c->hysteresis_kpa);
    return alarm && !clear;
}

static int32_t handle(void) {
    uint8_t channel[32];
    uint8_t message[256];
    uint8_t config_bytes[128];
    uint8_t state_bytes[64];
    uint8_t device[64]; /* device ids are at most 64 bytes */
    uint8_t out[192];
    static const char telemetry[] = "telemetry";

    int32_t channel_len = ef_channel(channel, sizeof channel);
    if (channel_len != (int32_t)sizeof telemetry - 1 ||
        !ef_str_eq((ef_str){(const char *)channel, (size_t)channel_len}, telemetry)) {
        return EF_REJECT_MESSAGE;
    }
    double kpa = 0;
    int32_t message_len = ef_message(message, sizeof message);
    if (message_len < 0 || !read_reading(message, (size_t)message_len, &kpa)) {
        return EF_REJECT_MESSAGE;
    }
    config c;
    int32_t config_len = ef_config(config_bytes, sizeof config_bytes);
    if (config_len < 0 || !read_config(config_bytes, (size_t)config_len, &c)) {
        return EF_REJECT_CONFIG;
    }
    state s;
    int32_t state_len = ef_state(state_bytes, sizeof state_bytes);
    if (state_len == EF_TOO_LARGE || !read_state(state_bytes, state_len, &s)) {
        return EF_REJECT_STATE;
    }
    int32_t device_len = ef_device_id(device, sizeof device);
    if (device_len < 0) {
        return EF_REJECT_MESSAGE;
    }

    ef_writer w;
    bool alarm = next_alarm(s.alarm, kpa, &c);
    if (alarm != s.alarm) {
        s.alarm = alarm;
        s.since_ms = ef_now_ms();
        ef_writer_init(&w, out, sizeof out);
        ef_write_map(&w, 2);
        ef_write_text(&w, "alarm");
        ef_write_bool(&w, alarm);
        ef_write_text(&w, "kpa");
        ef_write_float(&w, kpa);
        if (!ef_command_cbor(&w)) {
            return EF_REJECT_OUTPUT;
        }
        ef_writer_init(&w, out, sizeof out);
        ef_write_map(&w, 2);
        ef_write_text(&w, "alarm");
        ef_write_bool(&w, alarm);
        ef_write_text(&w, "since_ms");
        ef_write_int(&w, s.since_ms);
        if (!ef_set_state_cbor(&w)) {
            return EF_REJECT_OUTPUT;
        }
        ef_log(EF_LOG_INFO, alarm ? "pressure alarm raised" : "pressure alarm cleared");
    }
    ef_writer_init(&w, out, sizeof out);
    ef_write_map(&w, 4);
    ef_write_text(&w, "device");
    ef_write_text_n(&w, (const char *)device, (size_t)device_len);
    ef_write_text(&w, "kpa");
    ef_write_float(&w, kpa);
    ef_write_text(&w, "alarm");
    ef_write_bool(&w, s.alarm);
    ef_write_text(&w, "since_ms");
    ef_write_int(&w, s.since_ms);
    if (!ef_publish_cbor(telemetry, &w)) {
        return EF_REJECT_OUTPUT;
    }
    return EF_HANDLED;
}

EF_HANDLER(handle)
