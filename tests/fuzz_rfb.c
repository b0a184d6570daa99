/*
 * libFuzzer target for the RFB filter (rfb.c): both directions of one
 * console, interleaved as the input says, fed as the relay feeds them
 * (what the filter holds goes in front of the next piece).
 *
 * Input: a 3-byte prefix, then records.
 *   [0]     the clipboard setting (mod 3)
 *   [1..2]  seed of the piece sizes each record is cut into for the second run
 *   record: a byte (0x80: the server's, else the viewer's; low 7 bits: length),
 *           then that many bytes of the stream (fewer at the end of the input)
 *
 * Checked: a filter never keeps or holds more than it was given, holds
 * less than RFB_HOLD_MAX, and once it refuses a stream refuses everything.
 * Fed whole records or cut into pieces, it refuses at the same record and
 * forwards the same bytes before it. And what it forwards is clean: fed
 * again, record by record, to a fresh filter with the same setting, it
 * comes out unchanged with nothing dropped (no cut text the setting forbids
 * is left, and every encoding left in a SetEncodings is one it allows).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rfb.h"

#define FUZZ_NAME "fuzz_rfb"
#include "fuzz_check.h"

#define PREFIX_LEN 3
#define RECORD_MAX 127
#define CUT_TEXT_MAX 64

typedef struct {
    RfbDirection dir;
    const uint8_t *data;
    size_t len;
} Record;

/* What one run forwarded: per record, and whether (and at which record) it was refused. */
typedef struct {
    uint8_t *out[2]; /* each direction's forwarded bytes, concatenated */
    size_t out_len[2];
    size_t *record_end; /* per record: out_len[dir] after it */
    size_t refused_at;  /* the record refused, or SIZE_MAX */
    uint64_t dropped;
} Run;

/* One direction as the relay holds it: bytes waiting in front of the next piece. */
typedef struct {
    uint8_t buf[RFB_HOLD_MAX + RECORD_MAX];
    size_t held;
} Side;

static uint32_t xorshift(uint32_t *state)
{
    uint32_t x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *state = x;
}

/* Feeds one piece; 0, or -EBADMSG with the filter refusing for good. */
static int feed_piece(RfbFilter *f, RfbDirection dir, Side *side, const uint8_t *piece, size_t n,
                      Run *run)
{
    memcpy(side->buf + side->held, piece, n);
    size_t len = side->held + n, kept = SIZE_MAX, held = SIZE_MAX;
    int r = rfb_filter_feed(f, dir, side->buf, len, &kept, &held);
    if (r < 0) {
        CHECK(r == -EBADMSG);
        CHECK(kept == SIZE_MAX && held == SIZE_MAX);
        CHECK(rfb_filter_error(f)[0] != '\0');
        /* For good, both ways. */
        uint8_t byte = 0;
        CHECK(rfb_filter_feed(f, RFB_CLIENT, &byte, 1, &kept, &held) == -EBADMSG);
        CHECK(rfb_filter_feed(f, RFB_SERVER, &byte, 1, &kept, &held) == -EBADMSG);
        RfbSpan span;
        CHECK(rfb_filter_next(f, dir, &byte, 1, &span) == -EBADMSG);
        return r;
    }
    CHECK(kept + held <= len);
    CHECK(held < RFB_HOLD_MAX);
    memcpy(run->out[dir] + run->out_len[dir], side->buf, kept);
    run->out_len[dir] += kept;
    memmove(side->buf, side->buf + kept, held);
    side->held = held;
    return 0;
}

/* Feeds the records in order, each whole (seed 0) or in random pieces. */
static void run_records(RfbClipboard clipboard, const Record *records, size_t n, uint32_t seed,
                        size_t total, Run *run)
{
    RfbFilter *f = NULL;
    CHECK(rfb_filter_new(clipboard, CUT_TEXT_MAX, &f) == 0);
    CHECK(rfb_filter_error(f)[0] == '\0');
    Side sides[2] = {0};
    run->out[0] = malloc(total + 1);
    run->out[1] = malloc(total + 1);
    run->record_end = malloc((n + 1) * sizeof(size_t));
    CHECK(run->out[0] && run->out[1] && run->record_end);
    run->out_len[0] = run->out_len[1] = 0;
    run->refused_at = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        const Record *rec = &records[i];
        size_t at = 0;
        int r = 0;
        while (at < rec->len && r == 0) {
            size_t piece = rec->len - at;
            if (seed)
                piece = 1 + xorshift(&seed) % piece;
            r = feed_piece(f, rec->dir, &sides[rec->dir], rec->data + at, piece, run);
            at += piece;
        }
        run->record_end[i] = run->out_len[rec->dir];
        if (r < 0) {
            run->refused_at = i;
            break;
        }
    }
    run->dropped =
        rfb_filter_cut_texts_dropped(f, RFB_CLIENT) + rfb_filter_cut_texts_dropped(f, RFB_SERVER);
    rfb_filter_free(f);
}

static void run_free(Run *run)
{
    free(run->out[0]);
    free(run->out[1]);
    free(run->record_end);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < PREFIX_LEN)
        return 0;
    RfbClipboard clipboard = (RfbClipboard)(data[0] % 3);
    uint32_t seed = (uint32_t)(data[1] | data[2] << 8) | 0x10000;

    Record *records = malloc((size / 1 + 1) * sizeof(*records));
    CHECK(records);
    size_t n = 0;
    for (size_t at = PREFIX_LEN; at < size;) {
        size_t len = data[at] & 0x7f;
        if (len > size - at - 1)
            len = size - at - 1;
        records[n++] = (Record){data[at] & 0x80 ? RFB_SERVER : RFB_CLIENT, data + at + 1, len};
        at += 1 + len;
    }

    Run whole, pieces;
    run_records(clipboard, records, n, 0, size, &whole);
    run_records(clipboard, records, n, seed, size, &pieces);

    /* The same refusal, and the same bytes forwarded before it. */
    CHECK(whole.refused_at == pieces.refused_at);
    size_t upto = whole.refused_at == SIZE_MAX ? n : whole.refused_at;
    size_t len[2] = {0, 0};
    for (size_t i = 0; i < upto; i++)
        len[records[i].dir] = whole.record_end[i];
    if (whole.refused_at == SIZE_MAX) {
        CHECK(whole.out_len[0] == len[0] && whole.out_len[1] == len[1]);
        CHECK(whole.dropped == pieces.dropped);
    }
    for (int d = 0; d < 2; d++) {
        CHECK(pieces.out_len[d] >= len[d]);
        size_t common = len[d] < pieces.out_len[d] ? len[d] : pieces.out_len[d];
        CHECK(memcmp(whole.out[d], pieces.out[d], common) == 0);
        if (whole.refused_at == SIZE_MAX)
            CHECK(pieces.out_len[d] == len[d]);
    }

    /* What came out, fed again record by record: clean, so unchanged. */
    Record *again = malloc((upto + 1) * sizeof(*again));
    CHECK(again);
    size_t start[2] = {0, 0};
    for (size_t i = 0; i < upto; i++) {
        RfbDirection d = records[i].dir;
        again[i] = (Record){d, whole.out[d] + start[d], whole.record_end[i] - start[d]};
        start[d] = whole.record_end[i];
    }
    Run second;
    run_records(clipboard, again, upto, 0, size, &second);
    CHECK(second.refused_at == SIZE_MAX);
    CHECK(second.dropped == 0);
    for (int d = 0; d < 2; d++) {
        CHECK(second.out_len[d] == start[d]);
        CHECK(memcmp(second.out[d], whole.out[d], start[d]) == 0);
    }

    run_free(&whole);
    run_free(&pieces);
    run_free(&second);
    free(again);
    free(records);
    return 0;
}
