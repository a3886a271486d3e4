/* Coverage-guided fuzz target of the C decoder core (tflic/rangecoder/entropy_core.c)
 * for clang's libFuzzer; see tools/fuzz_entropy_core.sh, which builds it with
 * AddressSanitizer and UndefinedBehaviorSanitizer and seeds it with real files.
 *
 * An input is a whole .tflic file.  The target reads its header as a decoder does
 * (40 bytes: sizes, stream lengths, latent check; the checksum and fingerprint are
 * not checked, so the fuzzer reaches the streams), allocates the outputs only
 * after the pixel limit and the stream-length rule passed, and decodes.  Any
 * sanitizer report, or a decode that succeeds without matching the file's latent
 * check, is a finding.  The model blob is read once from $TFLIC_FUZZ_MODEL. */
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
  free(z_symbols);
  free(y_hat);
  return 0;
}
