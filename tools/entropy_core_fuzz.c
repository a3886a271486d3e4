/* Coverage-guided fuzz target of the C decoder core (tflic/codec/rangecoder/entropy_core.c)
 * for clang's libFuzzer; see tools/fuzz_entropy_core.sh, which builds it with
 * AddressSanitizer and UndefinedBehaviorSanitizer and seeds it with real files.
 *
 * An input is a whole .tflic file.  The target reads its header as a decoder does
 * (40 bytes: sizes, stream lengths, latent check; the checksum and fingerprint are
 * not checked, so the fuzzer reaches the streams), allocates the outputs only
 * after the pixel limit and the stream-length rule passed, and decodes.  Any
 * sanitizer report, or a decode that succeeds without matching the file's latent
 * check, is a finding.  A file that decodes is decoded again with a progress
 * callback that stops the coding at some call: it must stop cleanly (no leak), or,
 * if the coding ends first, give the same latents, and its counts must increase to
 * the total.  The model blob is read once from $TFLIC_FUZZ_MODEL.
 *
 * Built with -DTFLIC_FUZZ_MAIN (tools/asan_entropy_core.sh, for compilers without
 * libFuzzer) it is a program instead: `entropy_core_fuzz ITERATIONS SEED FILES...`
 * decodes each file, then ITERATIONS random mutations of them (bit flips, byte sets,
 * header fields, truncations, zeroed tails). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "entropy_core.h"

#define MAX_PIXELS (1 << 18) /* keeps each run short; larger sizes are refused */

static tec_model *model;

static uint64_t load(const uint8_t *p, int n) {
  uint64_t v = 0;
  int i;
  for (i = n - 1; i >= 0; --i) v = v << 8 | p[i];
  return v;
}

static void load_model(void) {
  const char *path = getenv("TFLIC_FUZZ_MODEL");
  FILE *f = path ? fopen(path, "rb") : NULL;
  unsigned char *blob;
  long size;
  char err[256];
  if (!f) {
    fprintf(stderr, "set TFLIC_FUZZ_MODEL to a model blob\n");
    abort();
  }
  fseek(f, 0, SEEK_END);
  size = ftell(f);
  fseek(f, 0, SEEK_SET);
  blob = (unsigned char *)malloc((size_t)size);
  if (!blob || fread(blob, 1, (size_t)size, f) != (size_t)size) abort();
  fclose(f);
  model = tec_model_load(blob, (size_t)size, err, sizeof err);
  free(blob);
  if (!model) {
    fprintf(stderr, "%s\n", err);
    abort();
  }
}

/* A progress callback that checks its counts and stops at its `stop_at`-th call. */
typedef struct progress_probe {
  long calls, stop_at;
  uint64_t last, total;
  int bad;
} progress_probe;

static int probe(void *opaque, uint64_t done, uint64_t total) {
  progress_probe *p = (progress_probe *)opaque;
  if (done <= p->last || done > total || (p->total && total != p->total)) p->bad = 1;
  p->last = done;
  p->total = total;
  return ++p->calls == p->stop_at;
}

/* Decodes a file that decoded to (z_symbols, y_hat) again, with progress reports. */
static void decode_with_progress(const uint8_t *data, int height, int width, uint64_t z_len,
                                 uint64_t y_len, uint64_t check, size_t nz, size_t ny,
                                 const int32_t *z_symbols, const double *y_hat) {
  progress_probe p;
  tec_progress progress;
  int32_t *z2 = (int32_t *)malloc(nz * sizeof(int32_t));
  double *y2 = (double *)malloc(ny * sizeof(double));
  char err[256];
  int status;
  if (!z2 || !y2) abort();
  memset(&p, 0, sizeof p);
  p.stop_at = 1 + (long)(check % 5);
  progress.call = probe;
  progress.opaque = &p;
  progress.interval = 1 + check % 7;
  status = tec_decode_progress(model, height, width, data + 40, (size_t)z_len,
                               data + 40 + z_len, (size_t)y_len, check, MAX_PIXELS, z2, y2,
                               &progress, err, sizeof err);
  if (p.bad || !p.calls) abort();
  if (status == TEC_OK) {
    if (p.last != p.total || memcmp(z2, z_symbols, nz * sizeof(int32_t)) ||
        memcmp(y2, y_hat, ny * sizeof(double)))
      abort();
  } else if (status != TEC_ERR_STOPPED || p.calls != p.stop_at || strchr(err, '\n')) {
    abort();
  }
  free(z2);
  free(y2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  tec_info in;
  int height, width, h, w, hz, wz, status;
  uint64_t z_len, y_len, check;
  int32_t *z_symbols;
  double *y_hat;
  char err[256];
  if (!model) load_model();
  if (size < 40) return 0;
  tec_model_info(model, &in);
  height = (int)load(data + 14, 2);
  width = (int)load(data + 16, 2);
  z_len = load(data + 20, 4);
  y_len = load(data + 24, 4);
  check = load(data + 28, 8);
  if (40 + z_len + y_len != size || !height || !width) return 0;
  tec_grids(height, width, &h, &w, &hz, &wz);
  if ((uint64_t)height * width > MAX_PIXELS ||
      !tec_stream_holds((uint64_t)hz * wz * in.hyper_channels, z_len, in.z_cost_d, in.z_cost_p) ||
      !tec_stream_holds((uint64_t)h * w * in.latent_channels, y_len, in.y_cost_d, in.y_cost_p)) {
    /* The core must refuse these from the sizes alone, before any output. */
    status = tec_decode(model, height, width, data + 40, (size_t)z_len, data + 40 + z_len,
                        (size_t)y_len, check, MAX_PIXELS, NULL, NULL, err, sizeof err);
    if (status == TEC_OK) abort();
    return 0;
  }
  z_symbols = (int32_t *)malloc((size_t)hz * wz * in.hyper_channels * sizeof(int32_t));
  y_hat = (double *)malloc((size_t)h * w * in.latent_channels * sizeof(double));
  if (!z_symbols || !y_hat) abort();
  status = tec_decode(model, height, width, data + 40, (size_t)z_len, data + 40 + z_len,
                      (size_t)y_len, check, MAX_PIXELS, z_symbols, y_hat, err, sizeof err);
  if (status == TEC_OK &&
      tec_latent_check(z_symbols, (size_t)hz * wz * in.hyper_channels, y_hat,
                       (size_t)h * w * in.latent_channels) != check)
    abort();
  if (status != TEC_OK && (!err[0] || strchr(err, '\n'))) abort(); /* one-line errors */
  if (status == TEC_OK)
    decode_with_progress(data, height, width, z_len, y_len, check,
                         (size_t)hz * wz * in.hyper_channels,
                         (size_t)h * w * in.latent_channels, z_symbols, y_hat);
  free(z_symbols);
  free(y_hat);
  return 0;
}

#ifdef TFLIC_FUZZ_MAIN
static uint64_t rng_state;

static uint32_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (uint32_t)(rng_state >> 16);
}

static void store(uint8_t *p, uint64_t v, int n) {
  int i;
  for (i = 0; i < n; ++i) p[i] = (uint8_t)(v >> (8 * i));
}

/* One random mutation of `data` (n bytes) into `out`; returns its length. */
static size_t mutate(const uint8_t *data, size_t n, uint8_t *out) {
  size_t len = n, i;
  memcpy(out, data, n);
  switch (rnd() % 6) {
    case 0: /* bit flips anywhere */
      for (i = 0; i <= rnd() % 4; ++i) out[rnd() % n] ^= (uint8_t)(1u << (rnd() % 8));
      break;
    case 1: /* byte sets in the streams */
      if (n > 40)
        for (i = 0; i <= rnd() % 8; ++i) out[40 + rnd() % (n - 40)] = (uint8_t)rnd();
      break;
    case 2: /* declared size, streams unchanged */
      store(out + 14, 1 + rnd() % 2048, 2);
      store(out + 16, 1 + rnd() % 2048, 2);
      break;
    case 3: /* truncated y stream, lengths fixed */
      if (n > 40 && load(out + 24, 4)) {
        const uint64_t cut = rnd() % (load(out + 24, 4) + 1);
        store(out + 24, load(out + 24, 4) - cut, 4);
        len = n - (size_t)cut;
      }
      break;
    case 4: /* zeroed tail */
      if (n > 40) {
        const size_t from = 40 + rnd() % (n - 40);
        memset(out + from, 0, n - from);
      }
      break;
    default: /* another latent check */
      store(out + 28, ((uint64_t)rnd() << 32) | rnd(), 8);
  }
  return len;
}

int main(int argc, char **argv) {
  long iterations, it;
  int files = argc - 3, i;
  uint8_t **data, *out;
  size_t *sizes, biggest = 0;
  if (argc < 4) {
    fprintf(stderr, "usage: %s ITERATIONS SEED FILES...\n", argv[0]);
    return 2;
  }
  iterations = atol(argv[1]);
  rng_state = 0x9E3779B97F4A7C15u ^ (uint64_t)atol(argv[2]);
  data = (uint8_t **)calloc((size_t)files, sizeof *data);
  sizes = (size_t *)calloc((size_t)files, sizeof *sizes);
  if (!data || !sizes) return 2;
  for (i = 0; i < files; ++i) {
    FILE *f = fopen(argv[3 + i], "rb");
    long size;
    if (!f) return 2;
    fseek(f, 0, SEEK_END);
    size = ftell(f);
    fseek(f, 0, SEEK_SET);
    sizes[i] = (size_t)size;
    data[i] = (uint8_t *)malloc(sizes[i] ? sizes[i] : 1);
    if (!data[i] || fread(data[i], 1, sizes[i], f) != sizes[i]) return 2;
    fclose(f);
    biggest = sizes[i] > biggest ? sizes[i] : biggest;
    LLVMFuzzerTestOneInput(data[i], sizes[i]);
  }
  out = (uint8_t *)malloc(biggest ? biggest : 1);
  if (!out) return 2;
  for (it = 0; it < iterations; ++it) {
    const int k = (int)(rnd() % (uint32_t)files);
    const size_t len = mutate(data[k], sizes[k], out);
    /* an exact-size copy, so that any read past the input trips ASan */
    uint8_t *input = (uint8_t *)malloc(len ? len : 1);
    if (!input) return 2;
    memcpy(input, out, len);
    LLVMFuzzerTestOneInput(input, len);
    free(input);
  }
  for (i = 0; i < files; ++i) free(data[i]);
  free(data);
  free(sizes);
  free(out);
  tec_model_free(model);
  printf("%ld mutations of %d files decoded or refused cleanly\n", iterations, files);
  return 0;
}
#endif
