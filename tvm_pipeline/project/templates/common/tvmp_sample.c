/*
 * One inference on the sample input and its report (see tvmp_sample.h). The report, one fact a line:
 *
 *     TVMP-BEGIN model=<name>
 *     TVMP-INPUT fnv1a32=<FNV-1a hash of the input bytes, 8 hex digits>
 *     TVMP-OUTPUT count=<elements> element_bytes=<sizeof(model_output_t)>
 *     TVMP-OUT <first index> <element hex> <element hex> ...     (up to 8 elements a line, bytes in memory order)
 *     TVMP-CYCLES <cycles in model_run>|unknown
 *     TVMP-MICROS <microseconds in model_run>|unknown
 *     TVMP-STACK <peak stack bytes>|unknown
 *     tvmp: <name>: argmax <index>, <us> us, <cycles> cycles, stack <bytes> B, status <status>
 *     TVMP-DONE status=<model_run's return value>
 *
 * The TVMP-OUTPUT/OUT/STACK/DONE lines are those of boards/common/harness.c, so tvm-pipeline parses both the same
 * way; the input hash lets `tvmp run --serial` check that the board runs the input it compares against.
 * Nothing is allocated: the output and the line buffer are static or on the stack, and no printf is needed.
 */
#include <stdint.h>

#include "tvmp_sample.h"
#include "tvmp_sample_config.h"
#include "input_data.h"

#define ELEMENTS_PER_LINE 8u
#define FNV1A32_OFFSET 2166136261u
#define FNV1A32_PRIME 16777619u

static model_output_t sample_output[MODEL_OUTPUT_COUNT];

int tvmp_sample_run(void) {
    return model_run(input_data, sample_output);
}

const model_output_t *tvmp_sample_output(void) {
    return sample_output;
}

static char *append_text(char *cursor, const char *text) {
    while (*text != '\0') {
        *cursor++ = *text++;
    }
    *cursor = '\0';
    return cursor;
}

static char *append_decimal(char *cursor, uint64_t value) {
    char digits[20];
    int count = 0;
    do {
        digits[count++] = (char)('0' + value % 10u);
        value /= 10u;
    } while (value != 0u);
    while (count > 0) {
        *cursor++ = digits[--count];
    }
    *cursor = '\0';
    return cursor;
}

/* A measured figure, or "unknown" for a negative one. */
static char *append_figure(char *cursor, int64_t value) {
    return value < 0 ? append_text(cursor, "unknown") : append_decimal(cursor, (uint64_t)value);
}

static char *append_hex(char *cursor, const uint8_t *bytes, uint32_t count) {
    static const char digits[] = "0123456789abcdef";
    for (uint32_t index = 0; index < count; ++index) {
        *cursor++ = digits[bytes[index] >> 4];
        *cursor++ = digits[bytes[index] & 0xFu];
    }
    *cursor = '\0';
    return cursor;
}

static uint32_t input_hash(void) {
    const uint8_t *bytes = (const uint8_t *)input_data;
    uint32_t hash = FNV1A32_OFFSET;
    for (uint32_t index = 0; index < (uint32_t)sizeof(input_data); ++index) {
        hash = (hash ^ bytes[index]) * FNV1A32_PRIME;
    }
    return hash;
}

static uint32_t output_argmax(void) {
    uint32_t best = 0;
    for (uint32_t index = 1; index < MODEL_OUTPUT_COUNT; ++index) {
        if (sample_output[index] > sample_output[best]) {
            best = index;
        }
    }
    return best;
}

static void write_figure(const char *prefix, int64_t value, tvmp_write_text_fn write_text) {
    char line[48];
    append_text(append_figure(append_text(line, prefix), value), "\n");
    write_text(line);
}

static void write_output(tvmp_write_text_fn write_text) {
    /* Worst case a line: prefix + index + ELEMENTS_PER_LINE * (space + 2 hex digits per byte) + newline. */
    char line[40 + ELEMENTS_PER_LINE * (1 + 2 * sizeof(model_output_t))];
    char *cursor = append_decimal(append_text(line, "TVMP-OUTPUT count="), MODEL_OUTPUT_COUNT);
    cursor = append_decimal(append_text(cursor, " element_bytes="), sizeof(model_output_t));
    append_text(cursor, "\n");
    write_text(line);
    const uint8_t *bytes = (const uint8_t *)sample_output;
    for (uint32_t first = 0; first < MODEL_OUTPUT_COUNT; first += ELEMENTS_PER_LINE) {
        cursor = append_decimal(append_text(line, "TVMP-OUT "), first);
        for (uint32_t index = first; index < first + ELEMENTS_PER_LINE && index < MODEL_OUTPUT_COUNT; ++index) {
            cursor = append_text(cursor, " ");
            cursor = append_hex(cursor, bytes + index * sizeof(model_output_t), sizeof(model_output_t));
        }
        append_text(cursor, "\n");
        write_text(line);
    }
}

void tvmp_sample_report(int status, const tvmp_sample_measurement_t *measured, tvmp_write_text_fn write_text) {
    char line[256]; /* the summary line: a 63-character name and five 20-digit figures fit */
    append_text(append_text(append_text(line, "TVMP-BEGIN model="), TVMP_SAMPLE_MODEL_NAME), "\n");
    write_text(line);

    const uint32_t hash = input_hash();
    const uint8_t hash_bytes[4] = {
        (uint8_t)(hash >> 24), (uint8_t)(hash >> 16), (uint8_t)(hash >> 8), (uint8_t)hash,
    };
    append_text(append_hex(append_text(line, "TVMP-INPUT fnv1a32="), hash_bytes, 4), "\n");
    write_text(line);

    write_output(write_text);
    write_figure("TVMP-CYCLES ", measured->cycles, write_text);
    write_figure("TVMP-MICROS ", measured->micros, write_text);
    write_figure("TVMP-STACK ", measured->stack_peak_bytes, write_text);

    char *cursor = append_text(append_text(append_text(line, "tvmp: "), TVMP_SAMPLE_MODEL_NAME), ": argmax ");
    cursor = append_decimal(cursor, output_argmax());
    cursor = append_text(append_figure(append_text(cursor, ", "), measured->micros), " us, ");
    cursor = append_text(append_figure(cursor, measured->cycles), " cycles, stack ");
    cursor = append_text(append_figure(cursor, measured->stack_peak_bytes), " B, status ");
    const uint64_t magnitude = status < 0 ? (uint64_t)(-(int64_t)status) : (uint64_t)status;
    append_text(append_decimal(append_text(cursor, status < 0 ? "-" : ""), magnitude), "\n");
    write_text(line);

    cursor = append_text(line, status < 0 ? "TVMP-DONE status=-" : "TVMP-DONE status=");
    append_text(append_decimal(cursor, magnitude), "\n");
    write_text(line);
}
