/* The integer entropy model and the coding loop of .tflic files, in portable C99.
 *
 * One implementation of what docs/bitstream.md specifies for format version 2:
 * z's symbols with the factorized prior, the hyper synthesis h_s on the integer
 * z_hat, the context transformer's (mean, table index) of every chunk, the y
 * stream in coding order (wavefront or serial), the latent check and the
 * stream-length rule.  Every number is an integer; they are carried in doubles
 * only where every product and partial sum stays below 2^53 (so any summation
 * order and vector width gives the same result), and divisions and square
 * roots are exact integer floors.  The results are the integers of the
 * readable numpy reference (tflic/codec/deterministic/), bit for bit.
 *
 * MODEL.  tec_model_load parses a model blob made from the model's exported
 * integer_entropy_model.npz (tflic/codec/rangecoder/entropy_core.py, `model_blob`):
 *     "TFEC", u32 version (1), u64 payload bytes, u64 CRC-32 (zlib) of the payload,
 *     payload: little-endian int64 values (scalars, and arrays as ndim, dims,
 *     values), in the fixed order of entropy_core.py.
 * Every size is validated against the others; a blob that does not parse is an
 * error, never a crash.  A loaded model is read-only and may be shared between
 * threads.
 *
 * ERRORS.  Functions return TEC_OK or a negative status and write a one-line
 * English message into `err` (err_size bytes, may be 0).  Decoding checks the
 * pixel limit and the stream-length rule from the sizes alone before it
 * allocates anything for the declared image.  Only the C standard library is
 * used (and range_coder.c).
 */
#ifndef TFLIC_ENTROPY_CORE_H_
#define TFLIC_ENTROPY_CORE_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
  TEC_OK = 0,
  TEC_ERR_ARG = -1,     /* Bad argument (sizes, NULL pointers). */
  TEC_ERR_NOMEM = -2,   /* malloc failed. */
  TEC_ERR_MODEL = -3,   /* Malformed model blob. */
  TEC_ERR_LIMIT = -4,   /* Image exceeds the pixel limit. */
  TEC_ERR_STREAM = -5,  /* Corrupt stream (decoder) or uncodable value. */
  TEC_ERR_DESYNC = -6,  /* Decoded latents fail the file's latent check. */
  TEC_ERR_INPUT = -7,   /* Non-finite latents given to the encoder. */
  TEC_ERR_STOPPED = -8  /* The progress callback stopped the coding. */
};

#define TEC_BLOB_VERSION 1
#define TEC_ONE 1024 /* Fixed point: an integer latent a stands for a / 2^10. */

typedef struct tec_model tec_model;

/* Progress of the coding loop, for the *_progress functions.  `call` hears how many of
 * the latent's `total` chunks (positions x groups) are coded: after a coding step that
 * leaves at least `interval` (0: 1) more done than its last call, and always once at
 * the end (done == total), so its counts increase and end at total.  It runs in the
 * coding thread and must not touch the coder's buffers.  Returning nonzero stops the
 * coding: the function frees what it allocated and returns TEC_ERR_STOPPED.  The calls
 * change nothing that is coded. */
typedef struct tec_progress {
  int (*call)(void *opaque, uint64_t done, uint64_t total);
  void *opaque;
  uint64_t interval;
} tec_progress;

/* What a caller needs to size its buffers and check a header. */
typedef struct tec_info {
  int latent_channels; /* M */
  int hyper_channels;  /* C_z */
  int num_groups;      /* K */
  int window;          /* w of the w x w context window */
  int serial;          /* 1: serial order, 0: wavefront */
  int hyper_features;  /* D, channels of h_s's output */
  int y_cost_d, y_cost_p, z_cost_d, z_cost_p; /* symbol_cost of the tables */
} tec_info;

/* Parses a model blob (copied; `blob` may be freed afterwards).  NULL on
 * failure, with the reason in err. */
tec_model *tec_model_load(const unsigned char *blob, size_t size, char *err,
                          size_t err_size);
void tec_model_free(tec_model *model);
void tec_model_info(const tec_model *model, tec_info *info);

/* The latent grid (h, w) and hyper grid (hz, wz) of an image of height x width
 * pixels (docs/bitstream.md). */
void tec_grids(int height, int width, int *h, int *w, int *hz, int *wz);

/* 1 if a stream of num_bytes may hold num_symbols symbols of tables of cost
 * (d, p): num_symbols * d <= (num_bytes + 8) * 2^(p + 3). */
int tec_stream_holds(uint64_t num_symbols, uint64_t num_bytes, int d, int p);

/* The file's latent check of z's symbols and y_hat's integers. */
uint64_t tec_latent_check(const int32_t *z_symbols, size_t nz,
                          const double *y_hat, size_t ny);

/* h_s: hyperprior features [h][w][D] (integers as doubles) of z's symbols
 * [hz][wz][C_z]; hz = ceil(h / 4), wz = ceil(w / 4). */
int tec_hyper_features(const tec_model *model, const int32_t *z_symbols,
                       int h, int w, double *features, char *err,
                       size_t err_size);

/* Decodes the streams of an image of height x width pixels: z's symbols
 * [hz][wz][C_z] into z_symbols and the integer latent [h][w][M] into y_hat
 * (caller-allocated), then checks them against `check` and that both streams
 * end correctly.  max_pixels: refuse larger images (0: no limit). */
int tec_decode(const tec_model *model, int height, int width,
               const unsigned char *z_stream, size_t z_len,
               const unsigned char *y_stream, size_t y_len, uint64_t check,
               uint64_t max_pixels, int32_t *z_symbols, double *y_hat,
               char *err, size_t err_size);

/* tec_decode with progress reports (NULL: none, as tec_decode). */
int tec_decode_progress(const tec_model *model, int height, int width,
                        const unsigned char *z_stream, size_t z_len,
                        const unsigned char *y_stream, size_t y_len, uint64_t check,
                        uint64_t max_pixels, int32_t *z_symbols, double *y_hat,
                        const tec_progress *progress, char *err, size_t err_size);

/* tec_decode as a decoder whose entropy model drifted would run: the first
 * value of coding step `flip_step` uses the table half the scale range away.
 * For tests of the latent check only. */
int tec_decode_drifted(const tec_model *model, int height, int width,
                       const unsigned char *z_stream, size_t z_len,
                       const unsigned char *y_stream, size_t y_len, uint64_t check,
                       uint64_t max_pixels, long flip_step, int32_t *z_symbols,
                       double *y_hat, char *err, size_t err_size);

/* Encodes an encoder's latents: y, the gained latent [h][w][M], and z, the
 * hyper latent [hz][wz][C_z] (float32, as the analysis computes them).  On
 * success *z_stream and *y_stream are malloc'ed streams padded to the
 * stream-length rule (free them), z_symbols [hz][wz][C_z] and y_hat [h][w][M]
 * (caller-allocated, each may be NULL) z's symbols and the integer latent,
 * *check the latent check. */
int tec_encode(const tec_model *model, int h, int w, const float *y,
               const float *z, unsigned char **z_stream, size_t *z_len,
               unsigned char **y_stream, size_t *y_len, int32_t *z_symbols,
               double *y_hat, uint64_t *check, char *err, size_t err_size);

/* tec_encode with progress reports (NULL: none, as tec_encode). */
int tec_encode_progress(const tec_model *model, int h, int w, const float *y,
                        const float *z, unsigned char **z_stream, size_t *z_len,
                        unsigned char **y_stream, size_t *y_len, int32_t *z_symbols,
                        double *y_hat, uint64_t *check, const tec_progress *progress,
                        char *err, size_t err_size);

#ifdef __cplusplus
}
#endif

#endif /* TFLIC_ENTROPY_CORE_H_ */
