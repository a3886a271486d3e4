/* Randomised self-check of tflic/codec/rangecoder/range_coder.c, meant to run under
 * -fsanitize=address,undefined (see tools/asan_range_coder.sh).
 *
 * Usage: range_coder_fuzz ITERATIONS SEED.  Exits 1 on the first broken
 * contract; sanitizer reports abort on their own.  Every table and stream is
 * copied into a buffer of exactly its size so that any read outside it trips
 * ASan. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "range_coder.h"

#define MAX_SYMBOLS 600

static uint64_t rng_state;

static uint32_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (uint32_t)(rng_state >> 16);
}

static uint32_t below(uint32_t n) { return n ? rnd() % n : 0; }

static long iteration;
static long hostile_ok, hostile_escape, hostile_past_end;

static void fail(const char *what, int status) {
  fprintf(stderr, "iteration %ld: %s (status %d: %s)\n", iteration, what,
          status, rc_status_string(status));
  exit(1);
}

static void *exact_copy(const void *src, size_t bytes) {
  void *p = malloc(bytes ? bytes : 1);
  if (!p) fail("malloc", RC_ERR_NOMEM);
  if (bytes) memcpy(p, src, bytes);
  return p;
}

/* Appends a random valid row to t[*n]; returns 0 if it does not fit. */
static int add_row(int32_t *t, size_t *n, size_t cap) {
  const int prec = 1 + (int)below(16);
  const int32_t last = (int32_t)1 << prec;
  size_t symbols = 1 + below(below(4) ? 12 : 300);
  size_t i, pad = below(3) ? 0 : below(4);
  int32_t c = 0;
  if (*n + symbols + 2 + pad > cap) return 0;
  t[(*n)++] = below(2) ? prec : -prec;
  t[(*n)++] = 0;
  for (i = 1; i < symbols; ++i) {
    /* Mostly positive steps, some zero-probability symbols. */
    int32_t room = last - 1 - c;
    if (room > 0 && below(8)) c += 1 + (int32_t)below((uint32_t)(room / 4 + 1));
    t[(*n)++] = c;
  }
  t[(*n)++] = last;
  for (i = 0; i < pad; ++i) t[(*n)++] = last;
  return 1;
}

static size_t random_table(int32_t *t, size_t cap) {
  size_t n = 0, rows = 1 + below(8), i;
  while (rows-- && add_row(t, &n, cap)) {
  }
  switch (below(6)) {
    case 0: /* Mutated entries. */
      for (i = below(4); i > 0 && n; --i) {
        t[below((uint32_t)n)] = (int32_t)(rnd() - 0x80000000u) >> below(32);
      }
      break;
    case 1: /* Truncated. */
      n = below((uint32_t)n + 1);
      break;
    case 2: /* Garbage. */
      for (i = 0; i < n; ++i) t[i] = (int32_t)below(20) - 3;
      break;
    default:
      break;
  }
  return n;
}

static int32_t random_value(void) {
  switch (below(8)) {
    case 0: return (int32_t)rnd() ^ (int32_t)(rnd() << 16);
    case 1: return -(int32_t)below(1u << below(31));
    case 2: return (int32_t)below(1u << below(31));
    case 3: return (int32_t)below(3) - 1 + (int32_t)0x40000000 - (int32_t)below(8);
    default: return (int32_t)below(40) - 8;
  }
}

static int32_t random_index(size_t rows) {
  return below(16) ? (int32_t)below((uint32_t)rows)
                   : (int32_t)below((uint32_t)rows + 3) - 1;
}

/* Encodes into a buffer grown a few bytes at a time (exercising the atomic
 * RC_ERR_BUFFER_FULL path); returns the stream, its length in *len. */
static unsigned char *encode_growing(const rc_table *table, const int32_t *idx,
                                     const int32_t *val, const int *ok,
                                     int count, size_t *len) {
  size_t cap = below(4);
  unsigned char *buf = (unsigned char *)malloc(cap ? cap : 1);
  rc_encoder enc;
  int i, status;
  if (!buf) fail("malloc", RC_ERR_NOMEM);
  if (rc_encoder_init(&enc, cap ? buf : NULL, cap) != RC_OK) fail("init", -1);
  for (i = 0; i <= count; ++i) {
    for (;;) {
      unsigned char *grown;
      status = i < count ? rc_encode(&enc, table, idx[i], val[i])
                         : rc_encoder_finish(&enc);
      if (status != RC_ERR_BUFFER_FULL) break;
      cap += 1 + below(5);
      grown = (unsigned char *)malloc(cap);
      if (!grown) fail("malloc", RC_ERR_NOMEM);
      memcpy(grown, buf, enc.len);
      free(buf);
      buf = grown;
      if (rc_encoder_set_buffer(&enc, buf, cap) != RC_OK) fail("set_buffer", -1);
    }
    if (i < count && (status == RC_OK) != ok[i]) fail("rc_encode vs rc_check", status);
    if (i == count && status != RC_OK) fail("finish", status);
  }
  if (rc_encode(&enc, table, 0, 0) != RC_ERR_STATE) fail("encode after finish", -1);
  *len = rc_encoder_length(&enc);
  return buf;
}

static void check_roundtrip(const rc_table *table) {
  static int32_t idx[MAX_SYMBOLS], val[MAX_SYMBOLS];
  static int ok[MAX_SYMBOLS];
  static unsigned char big[1 << 16];
  const int count = (int)below(MAX_SYMBOLS);
  rc_encoder enc;
  rc_decoder dec;
  unsigned char *stream, *copy;
  size_t len;
  int i, status, consistent;
  rc_encoder_init(&enc, big, sizeof big);
  for (i = 0; i < count; ++i) {
    idx[i] = random_index(table->num_rows);
    val[i] = random_value();
    ok[i] = rc_check(table, idx[i], val[i]) == RC_OK;
    status = rc_encode(&enc, table, idx[i], val[i]);
    if ((status == RC_OK) != ok[i]) fail("rc_encode vs rc_check", status);
  }
  if ((status = rc_encoder_finish(&enc)) != RC_OK) fail("finish", status);
  stream = encode_growing(table, idx, val, ok, count, &len);
  if (len != enc.len || memcmp(stream, big, len)) fail("growing buffer differs", 0);
  copy = (unsigned char *)exact_copy(stream, len);
  rc_decoder_init(&dec, copy, len);
  for (i = 0; i < count; ++i) {
    int32_t out;
    if (!ok[i]) continue;
    status = rc_decode(&dec, table, idx[i], &out);
    if (status != RC_OK) fail("decoding a valid stream", status);
    if (out != val[i]) fail("decoded value differs", 0);
  }
  rc_decoder_finish(&dec, &consistent);
  if (!consistent) fail("valid stream not consistent", 0);
  free(copy);
  free(stream);
}

/* Decodes a corrupted or random stream; only the documented codes may occur. */
static void check_hostile(const rc_table *table, const unsigned char *stream,
                          size_t len) {
  unsigned char *copy = (unsigned char *)exact_copy(stream, len);
  const int count = (int)below(4 * MAX_SYMBOLS);
  rc_decoder dec;
  int i, consistent;
  rc_decoder_init(&dec, copy, len);
  for (i = 0; i < count; ++i) {
    int32_t out;
    const int status = rc_decode(&dec, table, random_index(table->num_rows), &out);
    if (status == RC_ERR_INDEX) continue;
    if (status == RC_ERR_ESCAPE || status == RC_ERR_PAST_END) {
      if (rc_decode(&dec, table, 0, &out) != RC_ERR_STATE) fail("not sticky", 0);
      rc_decoder_finish(&dec, &consistent);
      if (consistent) fail("consistent after an error", 0);
      ++*(status == RC_ERR_ESCAPE ? &hostile_escape : &hostile_past_end);
      free(copy);
      return;
    }
    if (status != RC_OK) fail("unexpected decode status", status);
  }
  ++hostile_ok;
  rc_decoder_finish(&dec, &consistent);
  free(copy);
}

static void mutate(unsigned char *s, size_t *len, size_t cap) {
  size_t i;
  switch (below(4)) {
    case 0:
      for (i = 1 + below(3); i > 0 && *len; --i) s[below((uint32_t)*len)] ^= 1u << below(8);
      break;
    case 1:
      *len = below((uint32_t)*len + 1);
      break;
    case 2:
      while (*len < cap && below(8)) s[(*len)++] = (unsigned char)(below(2) ? 0 : rnd());
      break;
    default:
      for (i = 0; i < *len; ++i) s[i] = (unsigned char)rnd();
      break;
  }
}

static void check_api_errors(void) {
  rc_table table;
  rc_encoder enc;
  rc_decoder dec;
  int32_t out;
  int consistent;
  const int32_t hang_row[] = {-12, 0, 1, 4094, 4095, 4096};
  /* After the escape, code == low and every further bit decodes as zero: the
   * streams make tfc's decoder spin forever. */
  const unsigned char hang[] = {0xFF, 0xF0, 0, 0, 0, 0};
  if (rc_table_init(NULL, hang_row, 6, 0, NULL) != RC_ERR_ARG ||
      rc_table_init(&table, NULL, 6, 0, NULL) != RC_ERR_ARG ||
      rc_encoder_init(NULL, NULL, 0) != RC_ERR_ARG ||
      rc_decoder_init(&dec, NULL, 3) != RC_ERR_ARG) {
    fail("NULL arguments accepted", 0);
  }
  if (rc_table_init(&table, hang_row, 6, 0, NULL) != RC_OK) fail("hang row", 0);
  rc_encoder_init(&enc, NULL, 0);
  if (rc_encode(&enc, &table, 0, 1000000) != RC_ERR_BUFFER_FULL || enc.len ||
      enc.low || enc.range_m1 != 0xFFFFFFFFu) {
    fail("encode into an empty buffer", 0);
  }
  if (rc_encode(&enc, &table, 0, (int32_t)0x80000000u) != RC_ERR_VALUE ||
      rc_encode(&enc, &table, 0, (1 << RC_MAX_ESCAPE_BITS) + 2) != RC_ERR_VALUE ||
      rc_encode(&enc, &table, 1, 0) != RC_ERR_INDEX) {
    fail("unencodable values accepted", 0);
  }
  rc_decoder_init(&dec, hang, 2);
  if (rc_decode(&dec, &table, 0, &out) != RC_ERR_PAST_END) fail("short hang stream", 0);
  rc_decoder_init(&dec, hang, sizeof hang);
  if (rc_decode(&dec, &table, 0, &out) != RC_ERR_ESCAPE) fail("hang stream", 0);
  if (rc_decoder_finish(&dec, &consistent) != RC_OK || consistent) {
    fail("finish after error", 0);
  }
  rc_table_free(&table);
  rc_table_free(&table);
}

/* Symbol 21845 of 65536 equiprobable ones keeps the carry pending forever, so
 * tfc writes 2 bytes however long the run: the decoder must read the implied
 * zeros without complaint. */
static void check_long_carry(void) {
  static int32_t entries[65539 + 4];
  static const unsigned char expected[] = {0x00, 0x01};
  unsigned char buf[4];
  rc_table table;
  rc_encoder enc;
  rc_decoder dec;
  int32_t i, out;
  int consistent;
  entries[0] = 16;
  for (i = 0; i <= 65536; ++i) entries[1 + i] = i;
  memcpy(entries + 65538, (const int32_t[]){16, 0, 3, 65536}, 4 * sizeof(int32_t));
  if (rc_table_init(&table, entries, 65542, 0, NULL) != RC_OK) fail("carry table", 0);
  rc_encoder_init(&enc, buf, sizeof buf);
  if (rc_encode(&enc, &table, 1, 0) != RC_OK) fail("carry encode", 0);
  for (i = 0; i < 1000; ++i) {
    if (rc_encode(&enc, &table, 0, 21845) != RC_OK) fail("carry encode", 0);
  }
  if (rc_encoder_finish(&enc) != RC_OK || enc.len != 2 || memcmp(buf, expected, 2)) {
    fail("long carry stream", 0);
  }
  rc_decoder_init(&dec, expected, sizeof expected);
  if (rc_decode(&dec, &table, 1, &out) != RC_OK || out != 0) fail("carry decode", 0);
  for (i = 0; i < 1000; ++i) {
    if (rc_decode(&dec, &table, 0, &out) != RC_OK || out != 21845) fail("carry decode", 0);
  }
  if (rc_decoder_finish(&dec, &consistent) != RC_OK || !consistent) fail("carry finish", 0);
  /* A longer run has the same stream, so decoding on continues it. */
  if (rc_decode(&dec, &table, 0, &out) != RC_OK || out != 21845) fail("carry past end", 0);
  rc_table_free(&table);
}

int main(int argc, char **argv) {
  const long iterations = argc > 1 ? atol(argv[1]) : 1000;
  static int32_t entries[4096];
  static unsigned char stream[1 << 12];
  long valid = 0, rejected = 0;
  rng_state = 0x9E3779B97F4A7C15ull ^ (uint64_t)(argc > 2 ? atol(argv[2]) : 1);
  check_api_errors();
  check_long_carry();
  for (iteration = 0; iteration < iterations; ++iteration) {
    const size_t n = random_table(entries, sizeof entries / sizeof *entries);
    const size_t row_len = below(4) ? 0 : 1 + below(40);
    int32_t *copy = (int32_t *)exact_copy(entries, n * sizeof *entries);
    rc_table table;
    size_t len, bad = (size_t)-1;
    int status = rc_table_init(&table, copy, n, row_len, &bad);
    if (status != RC_OK) {
      if (status != RC_ERR_TABLE || (n && bad >= n)) fail("table error", status);
      rejected++;
      free(copy);
      continue;
    }
    valid++;
    check_roundtrip(&table);
    len = below(64);
    mutate(stream, &len, sizeof stream);
    check_hostile(&table, stream, len);
    {
      /* A real stream, then corrupted. */
      rc_encoder enc;
      int i;
      rc_encoder_init(&enc, stream, sizeof stream);
      for (i = below(200); i > 0; --i) {
        rc_encode(&enc, &table, random_index(table.num_rows), random_value());
      }
      if (rc_encoder_finish(&enc) == RC_OK) {
        len = enc.len;
        mutate(stream, &len, sizeof stream);
        check_hostile(&table, stream, len);
      }
    }
    rc_table_free(&table);
    free(copy);
  }
  printf("range_coder_fuzz: %ld iterations, %ld valid tables, %ld rejected; "
         "hostile streams: %ld decoded, %ld overlong escapes, %ld past end\n",
         iterations, valid, rejected, hostile_ok, hostile_escape, hostile_past_end);
  return 0;
}
