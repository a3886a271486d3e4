/* Portable C99 range coder, byte-compatible with tensorflow-compression 2.14.
 *
 * Streams written by rc_encode/rc_encoder_finish are byte-identical to those of
 * tfc.create_range_encoder + tfc.entropy_encode_index/_channel +
 * tfc.entropy_encode_finalize for the same lookup table and values (all that
 * tfc codes correctly; the rest are errors here, see below), and
 * rc_decode/rc_decoder_finish decode tfc's streams exactly as
 * tfc.entropy_decode_index/_channel + tfc.entropy_decode_finalize do.  Unlike
 * tfc, every function validates its input, reports errors by status code, and
 * does bounded work per symbol on any stream.  Only the C standard library is
 * used (malloc/free in rc_table_init/rc_table_free, memset/memcpy).
 *
 * LOOKUP TABLE.  A flat array of int32 "rows", as tfc's entropy models build
 * them.  A row is
 *     P, c[0], c[1], ..., c[K]
 * with 1 <= |P| <= 16, c[0] == 0, c[i] <= c[i+1], and c[K] the FIRST entry
 * equal to 2^|P|.  Symbol s in [0, K) has probability (c[s+1] - c[s]) / 2^|P|.
 * Entries equal to 2^|P| directly after a row are padding and are skipped (so a
 * row can never start with the previous row's 2^|P|; tfc behaves the same).
 * P > 0: values are symbols in [0, K).
 * P < 0: the last symbol, K - 1, is an escape.  Value v in [0, K - 1) is coded
 *   directly; any other v is coded as the escape followed by the Elias-gamma
 *   code of g (g = -v if v < 0, else g = v - (K - 1) + 1) and a sign bit, all
 *   as equiprobable binary symbols.  Only 1 <= g < 2^RC_MAX_ESCAPE_BITS can be
 *   coded (tfc's encoder loops forever for larger g and miscodes INT32_MIN).
 * With row_len > 0 the array is a [n / row_len, row_len] matrix holding exactly
 * one row (plus padding) per matrix row, as tfc accepts for rank-2 tables.
 *
 * ERRORS.  rc_table_init returns RC_ERR_TABLE for: n >= RC_MAX_TABLE_ENTRIES;
 * n not a multiple of a nonzero row_len; fewer than 3 entries left for a row;
 * |P| not in [1, 16]; c[0] != 0; c[i+1] < c[i]; no entry equal to 2^|P| before
 * the end of the array (or matrix row); a matrix row with entries other than
 * padding after its row.  An empty table (0 rows) is valid but codes nothing.
 * rc_encode returns RC_ERR_INDEX for a row index outside [0, rows); RC_ERR_VALUE
 * for a value outside [0, K) in a P > 0 row, an escape with g outside
 * [1, 2^RC_MAX_ESCAPE_BITS), or a symbol of zero probability (c[s] == c[s+1];
 * tfc's models never produce one; tfc silently writes a stream that decodes
 * to other values).
 * rc_decode returns RC_ERR_INDEX for a bad row index (decoder unchanged).  It
 * fails, stickily, on exactly these streams, none of which tfc's encoder can
 * write (when decoding no more values than were encoded):
 *  - RC_ERR_ESCAPE: an escape's Elias-gamma prefix reaches RC_MAX_ESCAPE_BITS
 *    zeros.  tfc's decoder spins forever on such a prefix once the remaining
 *    bits are all zero, e.g. on the 2 bytes FF F0 with the row
 *    {-12, 0, 1, 4094, 4095, 4096}.
 *  - RC_ERR_PAST_END: a 16-bit renormalisation at which the interval does not
 *    span 2^32 needs bytes starting 4 or more bytes past the end of the data.
 *    tfc's encoder accounts 2 bytes per renormalisation and omits only the
 *    trailing zeros of a carry still pending at the end, which it defers at
 *    renormalisations spanning 2^32; these may legitimately read any distance
 *    past the end (e.g. tfc writes the 2-byte stream 00 01 for 81 values that
 *    make the decoder read 164 bytes past it).  Past the end the decoder
 *    supplies zero bytes, as tfc's does.
 * Any other stream decodes to some values; rc_decoder_finish then tells
 * whether it looked consistent.  Work per value is bounded: one binary search
 * of its row plus at most 2 * RC_MAX_ESCAPE_BITS binary decisions.
 *
 * All structs may live on the stack; their fields are private.  An rc_table is
 * read-only after rc_table_init and may be shared between threads; encoders and
 * decoders may not.
 */
#ifndef TFLIC_RANGE_CODER_H_
#define TFLIC_RANGE_CODER_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
  RC_OK = 0,
  RC_ERR_ARG = -1,          /* NULL pointer or inconsistent argument. */
  RC_ERR_NOMEM = -2,        /* malloc failed. */
  RC_ERR_TABLE = -3,        /* Malformed lookup table. */
  RC_ERR_INDEX = -4,        /* Row index out of range. */
  RC_ERR_VALUE = -5,        /* Value cannot be coded with its row. */
  RC_ERR_BUFFER_FULL = -6,  /* Output buffer too small; encoder unchanged. */
  RC_ERR_STATE = -7,        /* Encoder already finished, or decoder failed. */
  RC_ERR_ESCAPE = -8,       /* Stream: overlong escape code. */
  RC_ERR_PAST_END = -9      /* Stream: needs data no tfc stream omits. */
};

/* Escape magnitudes g satisfy 1 <= g < 2^RC_MAX_ESCAPE_BITS. */
#define RC_MAX_ESCAPE_BITS 30
/* Exclusive bound on the table length, which keeps decoded values in int32. */
#define RC_MAX_TABLE_ENTRIES ((size_t)1 << 30)

typedef struct rc_row {
  uint32_t start; /* Offset of the row's P entry. */
  uint32_t count; /* K + 1, the number of CDF entries c[0..K]. */
} rc_row;

typedef struct rc_table {
  const int32_t *data; /* Borrowed: must outlive the table. */
  rc_row *rows;
  size_t num_rows;
} rc_table;

typedef struct rc_encoder {
  uint32_t low;
  uint32_t range_m1;
  uint32_t carry;       /* 0, or the pending 16 bits if the carry resolves to 1. */
  size_t carry_run;     /* Pending bytes (0x00 or 0xFF) that follow `carry`. */
  unsigned char *buf;
  size_t cap;
  size_t len;           /* Bytes written to buf so far. */
  int finished;
} rc_encoder;

typedef struct rc_decoder {
  const unsigned char *data;
  size_t size;
  size_t pos;           /* Bytes consumed, counting zeros past the end. */
  uint32_t low;
  uint32_t range_m1;
  uint32_t code;
  int status;           /* RC_OK, or the error that stopped the decoder. */
} rc_decoder;

/* Returns a static English description of a status code. */
const char *rc_status_string(int status);

/* Parses `n` entries at `data` (borrowed) as a lookup table; row_len 0 for a
 * flat table, else the row length of a matrix table.  On RC_ERR_TABLE,
 * *bad_entry (if not NULL) is the offset of the offending entry.  On success
 * the table must be released with rc_table_free. */
int rc_table_init(rc_table *table, const int32_t *data, size_t n,
                  size_t row_len, size_t *bad_entry);

/* Releases a table; safe on a zeroed or failed table, and twice. */
void rc_table_free(rc_table *table);

/* Returns RC_OK if rc_encode(.., index, value) would succeed given enough
 * buffer, else the error it would return; touches no encoder. */
int rc_check(const rc_table *table, int32_t index, int32_t value);

/* Starts an encoder writing into buf[0, cap); buf may be NULL if cap is 0. */
int rc_encoder_init(rc_encoder *enc, unsigned char *buf, size_t cap);

/* Moves the encoder to a larger buffer that already holds its first enc->len
 * bytes (e.g. after realloc), so an RC_ERR_BUFFER_FULL call can be retried. */
int rc_encoder_set_buffer(rc_encoder *enc, unsigned char *buf, size_t cap);

/* Number of bytes written so far (the whole stream after rc_encoder_finish). */
size_t rc_encoder_length(const rc_encoder *enc);

/* Encodes `value` with row `index`.  Atomic: on any error the encoder is as
 * before the call (bytes past enc->len may have been scribbled within cap). */
int rc_encode(rc_encoder *enc, const rc_table *table, int32_t index,
              int32_t value);

/* Flushes the final 0-2 bytes; the stream is buf[0, rc_encoder_length).
 * Atomic like rc_encode; afterwards the encoder accepts no more symbols. */
int rc_encoder_finish(rc_encoder *enc);

/* Starts decoding data[0, size) (borrowed; data may be NULL if size is 0). */
int rc_decoder_init(rc_decoder *dec, const unsigned char *data, size_t size);

/* Decodes one value with row `index` into *value.  After RC_ERR_ESCAPE or
 * RC_ERR_PAST_END every further call returns RC_ERR_STATE. */
int rc_decode(rc_decoder *dec, const rc_table *table, int32_t index,
              int32_t *value);

/* Sets *consistent to 1 if the decoder consumed all the stream's bytes and
 * ended where tfc's encoder would have finished (tfc's entropy_decode_finalize),
 * else 0; 0 too after a decode error.  Unlike tfc, bytes left unread count as
 * consumed if they are all zero: they decode exactly as the zeros supplied past
 * the end, and tflic pads short streams with them (docs/bitstream.md).  0 always
 * means a mismatch; 1 is weak:
 * once the decoder has read 4 or more bytes past the end it is always 1, so
 * a truncated stream or extra decoded values often go unnoticed. */
int rc_decoder_finish(const rc_decoder *dec, int *consistent);

#ifdef __cplusplus
}
#endif

#endif /* TFLIC_RANGE_CODER_H_ */
