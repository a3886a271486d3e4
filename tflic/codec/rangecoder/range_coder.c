/* Range coder compatible with tensorflow-compression 2.14; see range_coder.h.
 *
 * The coder keeps a 32-bit interval [low, low + range_m1] and renormalises by
 * 16 bits whenever the range drops to 2^16 or below, so every emitted unit is
 * two bytes.  The encoder never propagates carries into written bytes: when a
 * renormalisation would split the interval across a 16-bit boundary it holds
 * the top 16 bits back ("carry pending") until a later symbol decides which
 * side the interval ends up on. */
#include "range_coder.h"

#include <stdlib.h>
#include <string.h>

#define RENORM_LIMIT 0x10000u /* Renormalise once range_m1 drops below this. */

/* Elias-gamma bits and the sign are coded with this equiprobable row. */
static const int32_t kBit[3] = {0, 1, 2};

const char *rc_status_string(int status) {
  switch (status) {
    case RC_OK: return "ok";
    case RC_ERR_ARG: return "invalid argument";
    case RC_ERR_NOMEM: return "out of memory";
    case RC_ERR_TABLE: return "malformed lookup table";
    case RC_ERR_INDEX: return "table index out of range";
    case RC_ERR_VALUE: return "value cannot be coded with its table row";
    case RC_ERR_BUFFER_FULL: return "output buffer full";
    case RC_ERR_STATE: return "coder already finished or failed";
    case RC_ERR_ESCAPE: return "corrupt stream: overlong escape code";
    case RC_ERR_PAST_END:
      return "corrupt stream: needs data past its end (truncated, or more "
             "values decoded than encoded)";
    default: return "unknown status";
  }
}

/* ---------------------------------------------------------------- tables -- */

static int table_fail(size_t *bad_entry, size_t at) {
  if (bad_entry) *bad_entry = at;
  return RC_ERR_TABLE;
}

/* Scans the row starting at data[*pos], stopping at `end`; on success stores it
 * and leaves *pos after its padding. */
static int scan_row(const int32_t *data, size_t *pos, size_t end, rc_row *row,
                    size_t *bad_entry) {
  size_t p = *pos;
  int32_t prec, last;
  if (end - p < 3) return table_fail(bad_entry, p);
  prec = data[p];
  if (prec == 0 || prec < -16 || prec > 16) return table_fail(bad_entry, p);
  last = (int32_t)1 << (prec < 0 ? -prec : prec);
  if (data[p + 1] != 0) return table_fail(bad_entry, p + 1);
  row->start = (uint32_t)p;
  p += 2;
  for (;; ++p) {
    if (p == end) return table_fail(bad_entry, p - 1);
    if (data[p] < data[p - 1]) return table_fail(bad_entry, p);
    if (data[p] == last) break;
  }
  row->count = (uint32_t)(p - row->start); /* c[0..K] excludes P. */
  for (++p; p < end && data[p] == last; ++p) {
  }
  *pos = p;
  return RC_OK;
}

int rc_table_init(rc_table *table, const int32_t *data, size_t n,
                  size_t row_len, size_t *bad_entry) {
  size_t pos = 0, rows = 0;
  rc_row *out;
  if (!table || (!data && n)) return RC_ERR_ARG;
  table->data = data;
  table->rows = NULL;
  table->num_rows = 0;
  if (n >= RC_MAX_TABLE_ENTRIES) return table_fail(bad_entry, 0);
  if (row_len && n % row_len) return table_fail(bad_entry, n - n % row_len);
  if (n == 0) return RC_OK;
  /* Every row takes at least 3 entries, which bounds the allocation. */
  out = (rc_row *)malloc((n / 3 + 1) * sizeof *out);
  if (!out) return RC_ERR_NOMEM;
  while (pos < n) {
    size_t end = row_len ? pos + row_len : n;
    int status = scan_row(data, &pos, end, &out[rows], bad_entry);
    if (status == RC_OK && pos != end && row_len) {
      status = table_fail(bad_entry, pos);
    }
    if (status != RC_OK) {
      free(out);
      return status;
    }
    ++rows;
  }
  table->rows = out;
  table->num_rows = rows;
  return RC_OK;
}

void rc_table_free(rc_table *table) {
  if (!table) return;
  free(table->rows);
  table->rows = NULL;
  table->num_rows = 0;
}

/* The row's precision |P|, CDF c[0..K] and whether it has an escape. */
typedef struct {
  const int32_t *cdf;
  uint32_t count;
  int precision;
  int escape;
} row_view;

static int get_row(const rc_table *table, int32_t index, row_view *row) {
  const rc_row *r;
  int32_t prec;
  if (index < 0 || (size_t)index >= table->num_rows) return RC_ERR_INDEX;
  r = &table->rows[index];
  prec = table->data[r->start];
  row->cdf = table->data + r->start + 1;
  row->count = r->count;
  row->precision = prec < 0 ? -prec : prec;
  row->escape = prec < 0;
  return RC_OK;
}

/* How `value` is coded: symbol in [0, K), plus the escape magnitude (0 for
 * none) and its sign. */
typedef struct {
  uint32_t symbol;
  uint32_t gamma;
  int negative;
} coded_value;

static int plan_value(const row_view *row, int32_t value, coded_value *out) {
  const uint32_t symbols = row->count - 1;
  out->gamma = 0;
  out->negative = 0;
  if (!row->escape) {
    if (value < 0 || (uint32_t)value >= symbols) return RC_ERR_VALUE;
    out->symbol = (uint32_t)value;
  } else {
    const int64_t escape = (int64_t)symbols - 1;
    if (value >= 0 && value < escape) {
      out->symbol = (uint32_t)value;
    } else {
      const int64_t g = value < 0 ? -(int64_t)value : value - escape + 1;
      if (g >= ((int64_t)1 << RC_MAX_ESCAPE_BITS)) return RC_ERR_VALUE;
      out->symbol = (uint32_t)escape;
      out->gamma = (uint32_t)g;
      out->negative = value < 0;
    }
  }
  if (row->cdf[out->symbol] == row->cdf[out->symbol + 1]) return RC_ERR_VALUE;
  return RC_OK;
}

int rc_check(const rc_table *table, int32_t index, int32_t value) {
  row_view row;
  coded_value plan;
  int status;
  if (!table) return RC_ERR_ARG;
  status = get_row(table, index, &row);
  return status != RC_OK ? status : plan_value(&row, value, &plan);
}

/* --------------------------------------------------------------- encoder -- */

int rc_encoder_init(rc_encoder *enc, unsigned char *buf, size_t cap) {
  if (!enc || (!buf && cap)) return RC_ERR_ARG;
  memset(enc, 0, sizeof *enc);
  enc->range_m1 = 0xFFFFFFFFu;
  enc->buf = buf;
  enc->cap = cap;
  return RC_OK;
}

int rc_encoder_set_buffer(rc_encoder *enc, unsigned char *buf, size_t cap) {
  if (!enc || !buf || cap < enc->len) return RC_ERR_ARG;
  enc->buf = buf;
  enc->cap = cap;
  return RC_OK;
}

size_t rc_encoder_length(const rc_encoder *enc) { return enc ? enc->len : 0; }

static int put_byte(rc_encoder *enc, unsigned byte) {
  if (enc->len == enc->cap) return RC_ERR_BUFFER_FULL;
  enc->buf[enc->len++] = (unsigned char)byte;
  return RC_OK;
}

static int put_run(rc_encoder *enc, unsigned byte, size_t count) {
  if (enc->cap - enc->len < count) return RC_ERR_BUFFER_FULL;
  memset(enc->buf + enc->len, (int)byte, count);
  enc->len += count;
  return RC_OK;
}

/* Narrows the interval to [lower, upper) / 2^precision of itself. */
static int encode_interval(rc_encoder *enc, uint32_t lower, uint32_t upper,
                           int precision) {
  const uint64_t range = (uint64_t)enc->range_m1 + 1;
  const uint32_t a = (uint32_t)((range * lower) >> precision);
  const uint32_t b = (uint32_t)(((range * upper) >> precision) - 1);
  const uint32_t old_low = enc->low;
  int status;
  enc->low = old_low + a;
  enc->range_m1 = b - a;
  if (enc->low + enc->range_m1 < enc->low) {
    /* The interval still spans 2^32, so the carry stays undecided; only a
     * carry-pending interval can span it (narrowing never creates a span). */
    if (enc->range_m1 < RENORM_LIMIT) {
      if (enc->carry_run > (size_t)-1 - 8) return RC_ERR_BUFFER_FULL;
      enc->low <<= 16;
      enc->range_m1 = (enc->range_m1 << 16) | 0xFFFFu;
      enc->carry_run += 2;
    }
    return RC_OK;
  }
  if (enc->carry) {
    /* Resolved: above 2^32 (low wrapped) the carry is 1, otherwise 0. */
    const int carried = enc->low < old_low;
    const uint32_t top = carried ? enc->carry : enc->carry - 1;
    if ((status = put_byte(enc, top >> 8)) != RC_OK ||
        (status = put_byte(enc, top & 0xFFu)) != RC_OK ||
        (status = put_run(enc, carried ? 0x00u : 0xFFu, enc->carry_run)) !=
            RC_OK) {
      return status;
    }
    enc->carry = 0;
    enc->carry_run = 0;
  }
  if (enc->range_m1 < RENORM_LIMIT) {
    const uint32_t top = enc->low >> 16;
    enc->low <<= 16;
    enc->range_m1 = (enc->range_m1 << 16) | 0xFFFFu;
    if (enc->low + enc->range_m1 < enc->low) {
      enc->carry = top + 1; /* top < 0xFFFF here, so carry is never 0. */
    } else if ((status = put_byte(enc, top >> 8)) != RC_OK ||
               (status = put_byte(enc, top & 0xFFu)) != RC_OK) {
      return status;
    }
  }
  return RC_OK;
}

static int encode_bit(rc_encoder *enc, unsigned bit) {
  return encode_interval(enc, (uint32_t)kBit[bit], (uint32_t)kBit[bit + 1], 1);
}

static int encode_plan(rc_encoder *enc, const row_view *row,
                       const coded_value *plan) {
  int status = encode_interval(enc, (uint32_t)row->cdf[plan->symbol],
                               (uint32_t)row->cdf[plan->symbol + 1],
                               row->precision);
  int bits = 0, i;
  if (status != RC_OK || plan->gamma == 0) return status;
  /* Elias gamma: (bit length - 1) zeros, then the bits from the top one. */
  while (bits < 31 && (plan->gamma >> bits) > 1) ++bits;
  for (i = 0; i < bits && status == RC_OK; ++i) status = encode_bit(enc, 0);
  for (i = bits; i >= 0 && status == RC_OK; --i) {
    status = encode_bit(enc, (plan->gamma >> i) & 1u);
  }
  return status == RC_OK ? encode_bit(enc, (unsigned)plan->negative) : status;
}

int rc_encode(rc_encoder *enc, const rc_table *table, int32_t index,
              int32_t value) {
  row_view row;
  coded_value plan;
  rc_encoder saved;
  int status;
  if (!enc || !table) return RC_ERR_ARG;
  if (enc->finished) return RC_ERR_STATE;
  if ((status = get_row(table, index, &row)) != RC_OK ||
      (status = plan_value(&row, value, &plan)) != RC_OK) {
    return status;
  }
  saved = *enc;
  status = encode_plan(enc, &row, &plan);
  if (status != RC_OK) *enc = saved;
  return status;
}

int rc_encoder_finish(rc_encoder *enc) {
  rc_encoder saved;
  int status = RC_OK;
  if (!enc) return RC_ERR_ARG;
  if (enc->finished) return RC_ERR_STATE;
  saved = *enc;
  if (enc->carry) {
    /* Settle on 2^32 inside the spanning interval: carry 1, then zeros, which
     * the decoder supplies implicitly. */
    status = put_byte(enc, enc->carry >> 8);
    if (status == RC_OK && (enc->carry & 0xFFu)) {
      status = put_byte(enc, enc->carry & 0xFFu);
    }
  } else if (enc->low != 0) {
    /* Pick the value in the interval with the most trailing zero bytes: low
     * rounded up to a multiple of 2^24 if that fits, else of 2^16 (which
     * always fits as the range exceeds 2^16). */
    const uint32_t high = enc->low + enc->range_m1;
    const uint32_t up24 = ((enc->low - 1) >> 24) + 1;
    if (up24 <= (high >> 24)) {
      status = put_byte(enc, up24);
    } else {
      const uint32_t up16 = ((enc->low - 1) >> 16) + 1;
      status = put_byte(enc, up16 >> 8);
      if (status == RC_OK && (up16 & 0xFFu)) status = put_byte(enc, up16 & 0xFFu);
    }
  }
  if (status != RC_OK) {
    *enc = saved;
    return status;
  }
  enc->finished = 1;
  return RC_OK;
}

/* --------------------------------------------------------------- decoder -- */

/* Shifts in the next two bytes, zeros past the end, as tfc's decoder does. */
static void read_16(rc_decoder *dec) {
  int i;
  for (i = 0; i < 2; ++i) {
    dec->code = (dec->code << 8) | (dec->pos < dec->size ? dec->data[dec->pos] : 0u);
    if (dec->pos != (size_t)-1) ++dec->pos;
  }
}

int rc_decoder_init(rc_decoder *dec, const unsigned char *data, size_t size) {
  if (!dec || (!data && size)) return RC_ERR_ARG;
  memset(dec, 0, sizeof *dec);
  dec->data = data;
  dec->size = size;
  dec->range_m1 = 0xFFFFFFFFu;
  read_16(dec);
  read_16(dec);
  return RC_OK;
}

/* Decodes a symbol in [0, count - 1) of the CDF cdf[0..count-1]. */
static int decode_interval(rc_decoder *dec, const int32_t *cdf, uint32_t count,
                           int precision, uint32_t *symbol) {
  const uint64_t range = (uint64_t)dec->range_m1 + 1;
  /* (code - low) < range always holds, so c[K] = 2^precision satisfies
   * range * c >= target and the search below cannot run off the row. */
  const uint64_t target = ((uint64_t)(dec->code - dec->low) + 1) << precision;
  uint32_t lo = 1, hi = count - 1;
  uint32_t a, b;
  while (lo < hi) {
    const uint32_t mid = lo + (hi - lo) / 2;
    if (range * (uint32_t)cdf[mid] >= target) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  a = (uint32_t)((range * (uint32_t)cdf[lo - 1]) >> precision);
  b = (uint32_t)(((range * (uint32_t)cdf[lo]) >> precision) - 1);
  dec->low += a;
  dec->range_m1 = b - a;
  *symbol = lo - 1;
  if (dec->range_m1 < RENORM_LIMIT) {
    /* The encoder's matching renormalisation accounted for 2 bytes, written
     * or deferred.  Only deferred carry runs (interval spanning 2^32) may be
     * left out of a finished stream, so elsewhere the 2 bytes read here lie
     * at most 4 bytes past its end (when the stream ends 1 byte into a carry
     * deferred by this very renormalisation). */
    if (dec->low + dec->range_m1 >= dec->low && dec->pos >= dec->size &&
        dec->pos - dec->size >= 4) {
      return RC_ERR_PAST_END;
    }
    dec->low <<= 16;
    dec->range_m1 = (dec->range_m1 << 16) | 0xFFFFu;
    read_16(dec);
  }
  return RC_OK;
}

static int decode_bit(rc_decoder *dec, uint32_t *bit) {
  return decode_interval(dec, kBit, 3, 1, bit);
}

static int decode_escape(rc_decoder *dec, uint32_t escape, int32_t *value) {
  uint32_t bit = 0, gamma = 1;
  int zeros = 0, status, i;
  /* tfc's encoder writes at most RC_MAX_ESCAPE_BITS - 1 prefix zeros; once
   * code == low the bits decode as zeros forever, so stop there. */
  for (;;) {
    if ((status = decode_bit(dec, &bit)) != RC_OK) return status;
    if (bit) break;
    if (++zeros == RC_MAX_ESCAPE_BITS) return RC_ERR_ESCAPE;
  }
  for (i = 0; i < zeros; ++i) {
    if ((status = decode_bit(dec, &bit)) != RC_OK) return status;
    gamma = (gamma << 1) | bit;
  }
  if ((status = decode_bit(dec, &bit)) != RC_OK) return status;
  /* No overflow: gamma < 2^30 and escape < RC_MAX_TABLE_ENTRIES. */
  *value = bit ? -(int32_t)gamma : (int32_t)(gamma + escape - 1);
  return RC_OK;
}

int rc_decode(rc_decoder *dec, const rc_table *table, int32_t index,
              int32_t *value) {
  row_view row;
  uint32_t symbol;
  int status;
  if (!dec || !table || !value) return RC_ERR_ARG;
  if (dec->status != RC_OK) return RC_ERR_STATE;
  if ((status = get_row(table, index, &row)) != RC_OK) return status;
  status = decode_interval(dec, row.cdf, row.count, row.precision, &symbol);
  if (status == RC_OK) {
    if (row.escape && symbol == row.count - 2) {
      status = decode_escape(dec, symbol, value);
    } else {
      *value = (int32_t)symbol;
    }
  }
  dec->status = status;
  return status;
}

int rc_decoder_finish(const rc_decoder *dec, int *consistent) {
  uint32_t high, shift, up;
  size_t i;
  if (!dec || !consistent) return RC_ERR_ARG;
  *consistent = 0;
  if (dec->status != RC_OK) return RC_OK;
  for (i = dec->pos; i < dec->size; ++i) {
    if (dec->data[i]) return RC_OK;
  }
  /* Mirror rc_encoder_finish: which value would the encoder have settled on? */
  high = dec->low + dec->range_m1;
  if (dec->low == 0 || high < dec->low) {
    *consistent = dec->code == 0;
    return RC_OK;
  }
  shift = ((dec->low - 1) >> 24) < (high >> 24) ? 24 : 16;
  up = ((dec->low - 1) >> shift) + 1;
  *consistent = (uint32_t)(up << shift) == dec->code;
  return RC_OK;
}
