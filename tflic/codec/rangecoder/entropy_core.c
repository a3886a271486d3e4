/* The integer entropy model and coding loop; see entropy_core.h.
 *
 * Conventions, as tflic/codec/deterministic/layers.py: an activation a stands for
 * a / 2^10 and is clamped to |a| <= 2^21 after every rescaling; a weight column
 * has a power-of-two scale; every layer rounds halves up back to 2^-10.  Values
 * are doubles holding integers.  Sums of products stay below 2^53, so they are
 * exact whatever the order the compiler vectorises them in; the build must
 * not use -ffast-math-style value changes beyond reassociation of such sums. */
#include "entropy_core.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "range_coder.h"

#define ACT_LIMIT 2097152.0 /* 2^21 */
#define PROB_ONE 32768.0    /* attention weights sum to about 2^15 */
#define GELU_HALF 8192      /* GELU tabulated on [-8, 8) at 2^-10 */
#define EXP_LAST 12288      /* exp(-d) tabulated for d in [0, 12] at 2^-10 */
#define SYMBOL_LIMIT 1048576.0 /* encoder symbols are clamped to +-2^20 */
#define STREAM_SLACK 8
#define MAX_DIM 4096        /* bound on any layer width a blob may declare */

static void set_error(char *err, size_t n, const char *format, ...) {
  va_list args;
  if (!err || !n) return;
  va_start(args, format);
  vsnprintf(err, n, format, args);
  va_end(args);
}

/* ------------------------------------------------------------ the model -- */

typedef struct dense_p {
  int n, m;            /* inputs, outputs */
  const double *w;     /* [n][m] */
  const double *b;     /* [m] or NULL */
  const double *scale; /* [m]: 2^-shift per column */
} dense_p;

typedef struct norm_p {
  int n, shift;
  double eps;
  const double *gamma, *beta; /* [n] */
} norm_p;

typedef struct swin_p {
  int window, shift, heads;
  norm_p norm1, norm2;
  dense_p qkv, proj, fc1, fc2;
  const double *bias; /* [heads][N][N] */
} swin_p;

typedef struct conv_p {
  int k, stride, relu, n, m;
  const double *w;     /* [k][k][n][m] */
  const double *b, *scale;
} conv_p;

typedef struct cross_p {
  int heads;
  norm_p norm_query, norm_mlp;
  dense_p query, key_value, proj, fc1, fc2;
} cross_p;

struct tec_model {
  tec_info info;
  int dim;               /* context token width */
  int cnn;               /* h_s: 1 convolutions, 0 Swin */
  dense_p resample0, resample1;
  int num_swin, num_conv, num_blocks;
  swin_p *swin;
  conv_p *conv;
  cross_p *blocks;
  dense_p chunk_embed, hyper_embed;
  const double *group_embedding, *slot_embedding, *query_embedding;
  double context_eps;
  norm_p head_norm;
  const double *head_w, *head_b, *head_scale; /* [K][dim][2c], [K][2c] */
  const double *gelu, *exp_table, *thresholds;
  int num_thresholds;
  const double *z_offset;
  int32_t *y_cdf, *z_cdf, *y_cdf_offset, *z_cdf_offset;
  int y_rows, z_rows;
  rc_table y_table, z_table;
  double *arena; /* every array above */
};

/* Reads the blob's int64 payload in order. */
typedef struct reader {
  const unsigned char *p, *end;
  double *arena;
  size_t used, cap;
  int failed;
  char *err;
  size_t err_size;
} reader;

static int fail(reader *r, const char *what) {
  if (!r->failed) set_error(r->err, r->err_size, "malformed entropy model: %s", what);
  r->failed = 1;
  return 0;
}

static int64_t next_value(reader *r) {
  uint64_t v = 0;
  int i;
  if (r->failed) return 0;
  if (r->end - r->p < 8) return fail(r, "ends early");
  for (i = 7; i >= 0; --i) v = v << 8 | r->p[i];
  r->p += 8;
  return (int64_t)v;
}

static int scalar(reader *r, int64_t low, int64_t high, const char *what) {
  const int64_t v = next_value(r);
  if (!r->failed && (v < low || v > high)) fail(r, what);
  return r->failed ? 0 : (int)v;
}

/* An array of `ndim` axes whose sizes must equal dims[i] (or be stored into
 * dims[i] if it is -1); NULL after an error. */
static const double *array(reader *r, int ndim, int *dims, const char *what) {
  size_t count = 1, i;
  double *out;
  if (scalar(r, ndim, ndim, what) != ndim) return NULL;
  for (i = 0; i < (size_t)ndim; ++i) {
    const int size = scalar(r, 0, 1 << 24, what);
    if (r->failed) return NULL;
    if (dims[i] < 0) dims[i] = size;
    /* no more values than the payload holds: the product cannot overflow */
    if (size != dims[i] || (size && count > (size_t)(r->end - r->p) / 8 / (size_t)size)) {
      fail(r, what);
      return NULL;
    }
    count *= (size_t)size;
  }
  if (r->failed || count > (size_t)(r->end - r->p) / 8 ||
      count > r->cap - r->used) {
    fail(r, what);
    return NULL;
  }
  out = r->arena + r->used;
  for (i = 0; i < count; ++i) {
    const int64_t v = next_value(r);
    if (v > ((int64_t)1 << 53) || v < -((int64_t)1 << 53)) {
      fail(r, what);
      return NULL;
    }
    out[i] = (double)v;
  }
  r->used += count;
  return out;
}

static const double *vector(reader *r, int n, const char *what) {
  int dims[1];
  dims[0] = n;
  return array(r, 1, dims, what);
}

/* Column shifts are stored; the layers multiply by 2^-shift (exact). */
static const double *scales(reader *r, int n, const char *what) {
  double *s = (double *)vector(r, n, what);
  int i;
  for (i = 0; s && i < n; ++i) {
    if (s[i] < -64 || s[i] > 64) {
      fail(r, what);
      return NULL;
    }
    s[i] = ldexp(1.0, -(int)s[i]);
  }
  return s;
}

/* dense: has_bias, w [n][m] (n, m: required, or -1 to take), b, shifts. */
static void read_dense(reader *r, dense_p *d, int n, int m, const char *what) {
  int dims[2];
  const int has_bias = scalar(r, 0, 1, what);
  dims[0] = n;
  dims[1] = m;
  d->w = array(r, 2, dims, what);
  d->n = dims[0];
  d->m = dims[1];
  if (d->n < 1 || d->m < 1 || d->n > MAX_DIM || d->m > MAX_DIM) fail(r, what);
  d->b = has_bias ? vector(r, d->m, what) : NULL;
  d->scale = scales(r, d->m, what);
}

static void read_norm(reader *r, norm_p *p, int n, const char *what) {
  p->n = n;
  p->shift = scalar(r, 0, 40, what);
  p->eps = scalar(r, 1, 1 << 20, what);
  p->gamma = vector(r, n, what);
  p->beta = vector(r, n, what);
}

static void read_mlp(reader *r, dense_p *fc1, dense_p *fc2, int dim, const char *what) {
  read_dense(r, fc1, dim, -1, what);
  read_dense(r, fc2, fc1->m, dim, what);
}

static void read_swin(reader *r, swin_p *s, int dim) {
  int dims[3];
  s->window = scalar(r, 1, 64, "Swin window");
  s->shift = scalar(r, 0, s->window - 1, "Swin shift");
  s->heads = scalar(r, 1, dim, "Swin heads");
  if (!r->failed && (dim % s->heads || (3 * dim) % 3)) fail(r, "Swin heads");
  read_norm(r, &s->norm1, dim, "Swin norm1");
  read_dense(r, &s->qkv, dim, 3 * dim, "Swin qkv");
  read_dense(r, &s->proj, dim, dim, "Swin proj");
  dims[0] = s->heads;
  dims[1] = dims[2] = s->window * s->window;
  s->bias = array(r, 3, dims, "Swin bias");
  read_norm(r, &s->norm2, dim, "Swin norm2");
  read_mlp(r, &s->fc1, &s->fc2, dim, "Swin mlp");
}

static void read_conv(reader *r, conv_p *c, int n) {
  int dims[4] = {-1, -1, -1, -1};
  c->stride = scalar(r, 1, 2, "conv stride");
  c->relu = scalar(r, 0, 1, "conv relu");
  dims[2] = n;
  c->w = array(r, 4, dims, "conv kernel");
  c->k = dims[0];
  c->n = n;
  c->m = dims[3];
  if (!r->failed && (dims[1] != c->k || c->k < 1 || c->k > 15 || c->m < 1 ||
                     c->m > MAX_DIM || (c->stride == 1 && c->k % 2 == 0) ||
                     (c->stride == 2 && c->k < 2)))
    fail(r, "conv kernel");
  c->b = vector(r, c->m, "conv bias");
  c->scale = scales(r, c->m, "conv shifts");
}

static void read_cross(reader *r, cross_p *b, int dim) {
  b->heads = scalar(r, 1, dim, "context heads");
  if (!r->failed && dim % b->heads) fail(r, "context heads");
  read_norm(r, &b->norm_query, dim, "context norm_query");
  read_dense(r, &b->query, dim, dim, "context query");
  read_dense(r, &b->key_value, dim, 2 * dim, "context key_value");
  read_dense(r, &b->proj, dim, dim, "context proj");
  read_norm(r, &b->norm_mlp, dim, "context norm_mlp");
  read_mlp(r, &b->fc1, &b->fc2, dim, "context mlp");
}

/* An int32 copy of a stored table (coding tables are int32 for the coder). */
static int32_t *int_table(reader *r, int *n, const char *what) {
  int dims[1] = {-1};
  const double *v = array(r, 1, dims, what);
  int32_t *out;
  int i;
  if (!v) return NULL;
  out = (int32_t *)malloc((size_t)(dims[0] ? dims[0] : 1) * sizeof(int32_t));
  if (!out) {
    fail(r, "out of memory");
    return NULL;
  }
  for (i = 0; i < dims[0]; ++i) {
    if (v[i] < -2147483648.0 || v[i] > 2147483647.0) {
      free(out);
      fail(r, what);
      return NULL;
    }
    out[i] = (int32_t)v[i];
  }
  *n = dims[0];
  return out;
}

/* CRC-32 (zlib's, reflected polynomial 0xEDB88320) of the payload. */
static uint32_t crc32(const unsigned char *p, size_t n) {
  uint32_t crc = 0xFFFFFFFFu;
  size_t i;
  int bit;
  for (i = 0; i < n; ++i) {
    crc ^= p[i];
    for (bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

static uint64_t load_u64(const unsigned char *p) {
  uint64_t v = 0;
  int i;
  for (i = 7; i >= 0; --i) v = v << 8 | p[i];
  return v;
}

static void read_model(reader *r, tec_model *m) {
  tec_info *in = &m->info;
  int i, dims[3], n_y_cdf = 0, n_z_cdf = 0, n;
  in->window = scalar(r, 1, 31, "window");
  if (!r->failed && in->window % 2 == 0) fail(r, "window");
  in->num_groups = scalar(r, 1, 64, "num_groups");
  in->serial = scalar(r, 0, 1, "mode");
  in->latent_channels = scalar(r, 1, MAX_DIM, "latent_channels");
  in->hyper_channels = scalar(r, 1, MAX_DIM, "hyper_channels");
  if (!r->failed && in->latent_channels % in->num_groups) fail(r, "num_groups");
  m->cnn = scalar(r, 0, 1, "hyper synthesis kind");
  if (m->cnn) {
    int channels = in->hyper_channels;
    m->num_conv = scalar(r, 1, 16, "conv layers");
    m->conv = (conv_p *)calloc((size_t)m->num_conv + 1, sizeof(conv_p));
    if (!m->conv) fail(r, "out of memory");
    for (i = 0; !r->failed && i < m->num_conv; ++i) {
      read_conv(r, &m->conv[i], channels);
      channels = m->conv[i].m;
    }
    in->hyper_features = channels;
  } else {
    read_dense(r, &m->resample0, in->hyper_channels, -1, "resample0");
    if (!r->failed && m->resample0.m % 4) fail(r, "resample0");
    m->num_swin = scalar(r, 0, 16, "Swin blocks");
    m->swin = (swin_p *)calloc((size_t)m->num_swin + 1, sizeof(swin_p));
    if (!m->swin) fail(r, "out of memory");
    for (i = 0; !r->failed && i < m->num_swin; ++i)
      read_swin(r, &m->swin[i], m->resample0.m / 4);
    read_dense(r, &m->resample1, m->resample0.m / 4, -1, "resample1");
    if (!r->failed && m->resample1.m % 4) fail(r, "resample1");
    in->hyper_features = m->resample1.m / 4;
  }
  {
    const int k = in->num_groups, c = in->latent_channels / in->num_groups;
    read_dense(r, &m->chunk_embed, c, -1, "chunk_embed");
    m->dim = m->chunk_embed.m;
    read_dense(r, &m->hyper_embed, in->hyper_features, m->dim, "hyper_embed");
    dims[0] = k;
    dims[1] = m->dim;
    m->group_embedding = array(r, 2, dims, "group_embedding");
    dims[0] = in->window * in->window;
    m->slot_embedding = array(r, 2, dims, "slot_embedding");
    dims[0] = k;
    m->query_embedding = array(r, 2, dims, "query_embedding");
    m->num_blocks = scalar(r, 1, 16, "context blocks");
    m->blocks = (cross_p *)calloc((size_t)m->num_blocks + 1, sizeof(cross_p));
    if (!m->blocks) fail(r, "out of memory");
    for (i = 0; !r->failed && i < m->num_blocks; ++i) read_cross(r, &m->blocks[i], m->dim);
    m->context_eps = scalar(r, 1, 1 << 20, "context eps");
    read_norm(r, &m->head_norm, m->dim, "head_norm");
    dims[0] = k;
    dims[1] = m->dim;
    dims[2] = 2 * c;
    m->head_w = array(r, 3, dims, "head");
    dims[1] = 2 * c;
    m->head_b = array(r, 2, dims, "head bias");
    m->head_scale = array(r, 2, dims, "head shifts");
    for (i = 0; m->head_scale && i < k * 2 * c; ++i) {
      double *s = (double *)m->head_scale;
      if (s[i] < -64 || s[i] > 64) fail(r, "head shifts");
      s[i] = ldexp(1.0, -(int)s[i]);
    }
  }
  m->gelu = vector(r, 2 * GELU_HALF, "gelu table");
  m->exp_table = vector(r, EXP_LAST + 1, "exp table");
  dims[0] = -1;
  m->thresholds = array(r, 1, dims, "thresholds");
  m->num_thresholds = dims[0];
  m->y_cdf = int_table(r, &n_y_cdf, "y_cdf");
  dims[0] = -1;
  m->y_cdf_offset = int_table(r, &m->y_rows, "y_cdf_offset");
  m->z_cdf = int_table(r, &n_z_cdf, "z_cdf");
  m->z_cdf_offset = int_table(r, &m->z_rows, "z_cdf_offset");
  m->z_offset = vector(r, in->hyper_channels, "z_offset");
  in->y_cost_d = scalar(r, 1, 1 << 16, "y cost");
  in->y_cost_p = scalar(r, 1, 16, "y cost");
  in->z_cost_d = scalar(r, 1, 1 << 16, "z cost");
  in->z_cost_p = scalar(r, 1, 16, "z cost");
  if (r->failed) return;
  if (r->p != r->end) {
    fail(r, "trailing data");
    return;
  }
  if (m->num_thresholds + 1 != m->y_rows) fail(r, "thresholds");
  if (m->z_rows != in->hyper_channels) fail(r, "z_cdf_offset");
  n = rc_table_init(&m->y_table, m->y_cdf, (size_t)n_y_cdf, 0, NULL);
  if (n == RC_OK) n = rc_table_init(&m->z_table, m->z_cdf, (size_t)n_z_cdf, 0, NULL);
  if (n != RC_OK) {
    fail(r, "coding tables");
    return;
  }
  if ((int)m->y_table.num_rows != m->y_rows || (int)m->z_table.num_rows != m->z_rows)
    fail(r, "coding tables");
}

tec_model *tec_model_load(const unsigned char *blob, size_t size, char *err,
                          size_t err_size) {
  reader r;
  tec_model *m;
  uint64_t payload;
  if (!blob || size < 24 || memcmp(blob, "TFEC", 4) != 0) {
    set_error(err, err_size, "not a tflic entropy model (bad magic)");
    return NULL;
  }
  if (load_u64(blob + 4) % 4294967296u != TEC_BLOB_VERSION) {
    set_error(err, err_size, "unsupported entropy model version %u",
              (unsigned)(load_u64(blob + 4) % 4294967296u));
    return NULL;
  }
  payload = load_u64(blob + 8);
  if (payload != size - 24 || payload % 8) {
    set_error(err, err_size, "malformed entropy model: wrong length");
    return NULL;
  }
  if (crc32(blob + 24, (size_t)payload) != load_u64(blob + 16)) {
    set_error(err, err_size, "malformed entropy model: checksum mismatch");
    return NULL;
  }
  m = (tec_model *)calloc(1, sizeof(tec_model));
  if (!m) {
    set_error(err, err_size, "out of memory");
    return NULL;
  }
  memset(&r, 0, sizeof r);
  r.p = blob + 24;
  r.end = blob + size;
  r.cap = (size_t)payload / 8;
  r.err = err;
  r.err_size = err_size;
  m->arena = (double *)malloc((r.cap ? r.cap : 1) * sizeof(double));
  r.arena = m->arena;
  if (!m->arena) {
    free(m);
    set_error(err, err_size, "out of memory");
    return NULL;
  }
  read_model(&r, m);
  if (r.failed) {
    tec_model_free(m);
    return NULL;
  }
  return m;
}

void tec_model_free(tec_model *m) {
  if (!m) return;
  rc_table_free(&m->y_table);
  rc_table_free(&m->z_table);
  free(m->y_cdf);
  free(m->z_cdf);
  free(m->y_cdf_offset);
  free(m->z_cdf_offset);
  free(m->swin);
  free(m->conv);
  free(m->blocks);
  free(m->arena);
  free(m);
}

void tec_model_info(const tec_model *m, tec_info *info) { *info = m->info; }

/* ------------------------------------------------- exact integer layers -- */

/* Written as a min and a max (one instruction each, vectorisable); values are
 * finite integers, so this equals clamping in any order. */
static double clampv(double x) {
  x = x < ACT_LIMIT ? x : ACT_LIMIT;
  return x > -ACT_LIMIT ? x : -ACT_LIMIT;
}

/* round(x * scale), halves up, for a power-of-two scale: exact. */
static double scale_round(double x, double scale) { return floor(x * scale + 0.5); }

/* clamp(round(x * scale)), clamped first: the same integer (the bounds are integers
 * and floor is monotonic). */
static double round_clamped(double x, double scale) {
  return floor(clampv(x * scale + 0.5));
}

/* floor(a / b) of integers, b > 0. */
static double floordiv(double a, double b) {
  const int64_t x = (int64_t)a, y = (int64_t)b;
  int64_t q = x / y;
  if (x % y != 0 && ((x < 0) != (y < 0))) --q;
  return (double)q;
}

/* floor(sqrt(n)) of an integer 0 <= n < 2^52. */
static double isqrt(double n) {
  int64_t r = (int64_t)sqrt(n);
  const int64_t v = (int64_t)n;
  while (r > 0 && r * r > v) --r;
  while ((r + 1) * (r + 1) <= v) ++r;
  return (double)r;
}

/* Tile of the products: TILE_R rows by TILE_C columns accumulate in local
 * arrays the compiler keeps in vector registers over the whole k loop. */
#define TILE_R 4
#define TILE_C 8

/* out[r][col + j] = b[j] + sum_k x[r][k] w[k][col + j] for one full tile. */
#if !(defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)))
static void dense_tile(const dense_p *d, const double *x, int col, double *out) {
  const int n = d->n, m = d->m;
  double acc[TILE_R][TILE_C];
  int k, a, b;
  for (a = 0; a < TILE_R; ++a)
    for (b = 0; b < TILE_C; ++b) acc[a][b] = d->b ? d->b[col + b] : 0.0;
  for (k = 0; k < n; ++k) {
    const double *w = d->w + (size_t)k * m + col;
    for (a = 0; a < TILE_R; ++a) {
      const double v = x[(size_t)a * n + k];
      for (b = 0; b < TILE_C; ++b) acc[a][b] += v * w[b];
    }
  }
  for (a = 0; a < TILE_R; ++a)
    for (b = 0; b < TILE_C; ++b) out[(size_t)a * m + col + b] = acc[a][b];
}
#endif

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
/* x86 with GCC or clang: the same tile as explicit vectors, in a 2-wide
 * (SSE2, every x86-64) and a 4-wide (AVX2 + FMA) version picked at run time.
 * FMA changes nothing: every product and sum is an exact integer. */
typedef double vec2 __attribute__((vector_size(16), aligned(8), may_alias));
typedef double vec4 __attribute__((vector_size(32), aligned(8), may_alias));
/* Named accumulators, not arrays: compilers keep them in registers. */
#define DEFINE_TILE(name, vec, lanes, attr)                                        \
  attr static void name(const dense_p *d, const double *x, int col, double *out) { \
    const int n = d->n, m = d->m;                                                 \
    const vec zero = {0};                                                         \
    const vec b0 = d->b ? *(const vec *)(d->b + col) : zero;                      \
    const vec b1 = d->b ? *(const vec *)(d->b + col + lanes) : zero;              \
    vec a00 = b0, a01 = b1, a10 = b0, a11 = b1, a20 = b0, a21 = b1, a30 = b0,     \
        a31 = b1;                                                                 \
    int k;                                                                        \
    for (k = 0; k < n; ++k) {                                                     \
      const double *wk = d->w + (size_t)k * m + col;                              \
      const vec w0 = *(const vec *)wk, w1 = *(const vec *)(wk + lanes);           \
      const double v0 = x[k], v1 = x[n + k], v2 = x[2 * n + k], v3 = x[3 * n + k]; \
      a00 += v0 * w0; a01 += v0 * w1;                                             \
      a10 += v1 * w0; a11 += v1 * w1;                                             \
      a20 += v2 * w0; a21 += v2 * w1;                                             \
      a30 += v3 * w0; a31 += v3 * w1;                                             \
    }                                                                             \
    *(vec *)(out + col) = a00; *(vec *)(out + col + lanes) = a01;                 \
    out += m;                                                                     \
    *(vec *)(out + col) = a10; *(vec *)(out + col + lanes) = a11;                 \
    out += m;                                                                     \
    *(vec *)(out + col) = a20; *(vec *)(out + col + lanes) = a21;                 \
    out += m;                                                                     \
    *(vec *)(out + col) = a30; *(vec *)(out + col + lanes) = a31;                 \
  }
typedef double vec8 __attribute__((vector_size(64), aligned(8), may_alias));
/* Eight rows: 16 accumulators of the 32 AVX-512 registers, half the weight loads
 * per multiply of the four-row tile. */
__attribute__((target("avx512f"))) static void dense_tile8_avx512(
    const dense_p *d, const double *x, int col, double *out) {
  const int n = d->n, m = d->m;
  const vec8 zero = {0};
  const vec8 b0 = d->b ? *(const vec8 *)(d->b + col) : zero;
  const vec8 b1 = d->b ? *(const vec8 *)(d->b + col + 8) : zero;
  vec8 a00 = b0, a01 = b1, a10 = b0, a11 = b1, a20 = b0, a21 = b1, a30 = b0, a31 = b1;
  vec8 a40 = b0, a41 = b1, a50 = b0, a51 = b1, a60 = b0, a61 = b1, a70 = b0, a71 = b1;
  int k;
  for (k = 0; k < n; ++k) {
    const double *wk = d->w + (size_t)k * m + col;
    const vec8 w0 = *(const vec8 *)wk, w1 = *(const vec8 *)(wk + 8);
    const double v0 = x[k], v1 = x[n + k], v2 = x[2 * n + k], v3 = x[3 * n + k];
    const double v4 = x[4 * n + k], v5 = x[5 * n + k], v6 = x[6 * n + k], v7 = x[7 * n + k];
    a00 += v0 * w0; a01 += v0 * w1;
    a10 += v1 * w0; a11 += v1 * w1;
    a20 += v2 * w0; a21 += v2 * w1;
    a30 += v3 * w0; a31 += v3 * w1;
    a40 += v4 * w0; a41 += v4 * w1;
    a50 += v5 * w0; a51 += v5 * w1;
    a60 += v6 * w0; a61 += v6 * w1;
    a70 += v7 * w0; a71 += v7 * w1;
  }
#define STORE_ROW(a, b) *(vec8 *)(out + col) = a; *(vec8 *)(out + col + 8) = b; out += m;
  STORE_ROW(a00, a01) STORE_ROW(a10, a11) STORE_ROW(a20, a21) STORE_ROW(a30, a31)
  STORE_ROW(a40, a41) STORE_ROW(a50, a51) STORE_ROW(a60, a61) STORE_ROW(a70, a71)
#undef STORE_ROW
}
DEFINE_TILE(dense_tile_sse2, vec2, 2, )
DEFINE_TILE(dense_tile_avx2, vec4, 4, __attribute__((target("avx2,fma"))))
DEFINE_TILE(dense_tile_avx512, vec8, 8, __attribute__((target("avx512f"))))
/* A layer's output rows rounded back to 2^-10 and clamped (round_clamped); with AVX
 * the compiler turns floor into a vector instruction (baseline x86-64 calls libm). */
#define DEFINE_EPILOGUE(name, attr)                                                \
  attr static void name(double *out, const double *scale, int rows, int m) {      \
    int r, j;                                                                     \
    for (r = 0; r < rows; ++r) {                                                  \
      double *o = out + (size_t)r * m;                                            \
      for (j = 0; j < m; ++j) {                                                   \
        o[j] = floor(clampv(o[j] * scale[j] + 0.5));                              \
      }                                                                           \
    }                                                                             \
  }
DEFINE_EPILOGUE(epilogue_sse2, )
DEFINE_EPILOGUE(epilogue_avx2, __attribute__((target("avx2,fma"))))
DEFINE_EPILOGUE(epilogue_avx512, __attribute__((target("avx512f"))))
typedef void (*epilogue_fn)(double *, const double *, int, int);
static epilogue_fn pick_epilogue(void) {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return epilogue_avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return epilogue_avx2;
  return epilogue_sse2;
}
#define EPILOGUE(out, scale, rows, m) pick_epilogue()(out, scale, rows, m)

typedef void (*tile_fn)(const dense_p *, const double *, int, double *);
/* The widest kernel this CPU runs and its tile width in columns; asked per
 * call (a few instructions) rather than cached, so threads share no state. */
static tile_fn pick_tile(int *columns) {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) {
    *columns = 16;
    return dense_tile_avx512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    *columns = 8;
    return dense_tile_avx2;
  }
  *columns = 4;
  return dense_tile_sse2;
}
#define PICK_TILE(columns) pick_tile(&columns)
#else
#define PICK_TILE(columns) (columns = TILE_C, dense_tile)
static void epilogue(double *out, const double *scale, int rows, int m) {
  int r, j;
  for (r = 0; r < rows; ++r)
    for (j = 0; j < m; ++j) out[(size_t)r * m + j] = round_clamped(out[(size_t)r * m + j], scale[j]);
}
#define EPILOGUE(out, scale, rows, m) epilogue(out, scale, rows, m)
#endif

/* One output of row x (the rows and columns that do not fill a tile). */
static double dense_one(const dense_p *d, const double *x, int j) {
  double acc = d->b ? d->b[j] : 0.0;
  int k;
  for (k = 0; k < d->n; ++k) acc += x[k] * d->w[(size_t)k * d->m + j];
  return acc;
}

/* out[j] = b[j] + sum_k x[k] w[k][j] for one row (the rows that do not fill a tile). */
#define DEFINE_ROW(name, attr)                                                        \
  attr static void name(const dense_p *d, const double *x, double *out) {            \
    const int n = d->n, m = d->m;                                                     \
    int j, k;                                                                         \
    for (j = 0; j < m; ++j) out[j] = d->b ? d->b[j] : 0.0;                            \
    for (k = 0; k < n; ++k) {                                                         \
      const double *w = d->w + (size_t)k * m;                                         \
      const double v = x[k];                                                          \
      for (j = 0; j < m; ++j) out[j] += v * w[j];                                     \
    }                                                                                 \
  }
DEFINE_ROW(row_generic, )
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
DEFINE_ROW(row_avx512, __attribute__((target("avx512f"))))
DEFINE_ROW(row_avx2, __attribute__((target("avx2,fma"))))
static void dense_row(const dense_p *d, const double *x, double *out) {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) row_avx512(d, x, out);
  else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) row_avx2(d, x, out);
  else row_generic(d, x, out);
}
#define ROW dense_row
#else
#define ROW row_generic
#endif

/* out [rows][m] = clamp(round((x [rows][n] @ w + b) * scale)).  The sums are
 * exact (below 2^53), so the tiles' order of additions does not matter. */
static void dense_rows(const dense_p *d, const double *x, int rows, double *out) {
  int step;
  void (*const tile)(const dense_p *, const double *, int, double *) = PICK_TILE(step);
  const int n = d->n, m = d->m, full_c = m - m % step;
  int r = 0, j;
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  if (tile == dense_tile_avx512)
    for (; r + 8 <= rows && full_c == m; r += 8)
      for (j = 0; j < m; j += step) dense_tile8_avx512(d, x + (size_t)r * n, j, out + (size_t)r * m);
#endif
  for (; r + TILE_R <= rows; r += TILE_R) {
    for (j = 0; j < full_c; j += step) tile(d, x + (size_t)r * n, j, out + (size_t)r * m);
    for (j = full_c; j < m; ++j) {
      int a;
      for (a = 0; a < TILE_R; ++a)
        out[(size_t)(r + a) * m + j] = dense_one(d, x + (size_t)(r + a) * n, j);
    }
  }
  for (; r < rows; ++r) ROW(d, x + (size_t)r * n, out + (size_t)r * m);
  EPILOGUE(out, d->scale, rows, m);
}

/* The sum of x[i] (shift = 0) or of (x[i] - shift)^2, in four partial sums that
 * compilers vectorise (exact: integers below 2^53, so any order gives the same). */
static double sum_of(const double *x, int n, double shift, int squared) {
  double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
  int i = 0;
  for (; i + 4 <= n; i += 4) {
    const double a = x[i] - shift, b = x[i + 1] - shift, c = x[i + 2] - shift,
                 d = x[i + 3] - shift;
    s0 += squared ? a * a : a;
    s1 += squared ? b * b : b;
    s2 += squared ? c * c : c;
    s3 += squared ? d * d : d;
  }
  for (; i < n; ++i) s0 += squared ? (x[i] - shift) * (x[i] - shift) : x[i] - shift;
  return (s0 + s1) + (s2 + s3);
}

/* out[i] = floor((x[i] - mean) * reciprocal * 2^-20 + 0.5), in the widest
 * vectors this CPU has (floor needs SSE4.1 to vectorise). */
#define DEFINE_CENTRE(name, attr)                                                     \
  attr static void name(const double *x, int n, double mean, double reciprocal,      \
                        double *out) {                                               \
    int i;                                                                           \
    for (i = 0; i < n; ++i) out[i] = floor((x[i] - mean) * reciprocal * (1.0 / 1048576.0) + 0.5); \
  }
DEFINE_CENTRE(centre_generic, )
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
DEFINE_CENTRE(centre_avx512, __attribute__((target("avx512f"))))
DEFINE_CENTRE(centre_avx2, __attribute__((target("avx2,fma"))))
static void centre(const double *x, int n, double mean, double reciprocal, double *out) {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) centre_avx512(x, n, mean, reciprocal, out);
  else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    centre_avx2(x, n, mean, reciprocal, out);
  else centre_generic(x, n, mean, reciprocal, out);
}
#else
#define centre centre_generic
#endif

/* (x - mean) / sqrt(variance + eps) of one row of n, at 2^-10 (layers.normalize). */
static void normalize(const double *x, int n, double eps, double *out) {
  double mean, std, reciprocal;
  mean = floordiv(sum_of(x, n, 0.0, 0) + (double)(n / 2), (double)n);
  std = isqrt((floordiv(sum_of(x, n, mean, 1), (double)n) + eps) * 256.0);
  reciprocal = floordiv(17179869184.0 /* 2^34 */ + floor(std * 0.5), std);
  centre(x, n, mean, reciprocal, out);
}

static void layer_norm_rows(const norm_p *p, const double *x, int rows, double *out) {
  const double scale = ldexp(1.0, -p->shift);
  int r, i;
  for (r = 0; r < rows; ++r) {
    double *o = out + (size_t)r * p->n;
    normalize(x + (size_t)r * p->n, p->n, p->eps, o);
    for (i = 0; i < p->n; ++i) o[i] = round_clamped(o[i] * p->gamma[i] + p->beta[i], scale);
  }
}

static void gelu(const double *table, double *x, size_t n) {
  size_t i;
  for (i = 0; i < n; ++i) {
    const double v = x[i];
    if (v < GELU_HALF && v >= -GELU_HALF) x[i] = table[(int)v + GELU_HALF];
    else if (v < 0) x[i] = 0.0;
  }
}

/* x += mlp(layer_norm(x)), rows of dim; scratch holds rows * (dim + hidden). */
static void mlp_residual(const norm_p *norm, const dense_p *fc1, const dense_p *fc2,
                         const double *gelu_table, double *x, int rows, double *scratch) {
  double *normed = scratch, *hidden = scratch + (size_t)rows * fc1->n;
  size_t i;
  layer_norm_rows(norm, x, rows, normed);
  dense_rows(fc1, normed, rows, hidden);
  gelu(gelu_table, hidden, (size_t)rows * fc1->m);
  dense_rows(fc2, hidden, rows, normed);
  for (i = 0; i < (size_t)rows * fc2->m; ++i) x[i] = clampv(x[i] + normed[i]);
}

/* softmax(logits) @ values over the `count` visible tokens (layers.attend):
 * out[d] for d < hd, values[t * stride + d]; logits are overwritten. */
static void attend(const double *exp_table, double *logits, const int *tokens,
                   int count, const double *values, size_t stride, int hd, double *out) {
  double top = logits[0], total = 0.0;
  int t, d;
  for (t = 1; t < count; ++t) top = logits[t] > top ? logits[t] : top;
  for (t = 0; t < count; ++t) {
    const double gap = top - logits[t];
    logits[t] = exp_table[gap < EXP_LAST ? (int)gap : EXP_LAST];
    total += logits[t];
  }
  for (d = 0; d < hd; ++d) out[d] = 0.0;
  for (t = 0; t < count; ++t) {
    const double p = floordiv(logits[t] * PROB_ONE + floor(total * 0.5), total);
    const double *v = values + (size_t)tokens[t] * stride;
    if (p == 0.0) continue;
    for (d = 0; d < hd; ++d) out[d] += p * v[d];
  }
  for (d = 0; d < hd; ++d) out[d] = round_clamped(out[d], 1.0 / PROB_ONE);
}

/* Four partial sums, which compilers vectorise (exact: integer sums below 2^53). */
static double dot(const double *a, const double *b, int n) {
  double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
  int i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += a[i] * b[i];
    s1 += a[i + 1] * b[i + 1];
    s2 += a[i + 2] * b[i + 2];
    s3 += a[i + 3] * b[i + 3];
  }
  for (; i < n; ++i) s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}

/* ----------------------------------------------------------------- h_s -- */

/* depth_to_space of [h][w][4c] -> [2h][2w][c]: channel (2a + b) c + i to
 * pixel (2y + a, 2x + b). */
static void depth_to_space(const double *x, int h, int w, int c, double *out) {
  int y, xx, a, b;
  for (y = 0; y < h; ++y)
    for (xx = 0; xx < w; ++xx)
      for (a = 0; a < 2; ++a)
        for (b = 0; b < 2; ++b)
          memcpy(out + ((size_t)(2 * y + a) * (2 * w) + (2 * xx + b)) * c,
                 x + ((size_t)y * w + xx) * 4 * c + (size_t)(2 * a + b) * c,
                 (size_t)c * sizeof(double));
}

/* Region of a rolled-frame coordinate for the shifted window's mask. */
static int region(int index, int size, int ws, int shift) {
  if (!shift) return 0;
  return index < size - ws ? 0 : (index < size - shift ? 1 : 2);
}

/* One Swin block in place on x [h][w][dim] (layers.swin_block). */
static int swin_block(const tec_model *m, const swin_p *s, double *x, int h, int w) {
  const int dim = s->norm1.n, ws = s->window, shift = s->shift, n = ws * ws;
  const int heads = s->heads, hd = dim / heads, hidden = s->fc1.m;
  const int hp = (h + ws - 1) / ws * ws, wp = (w + ws - 1) / ws * ws;
  const size_t cells = (size_t)h * w;
  double *normed = (double *)malloc(cells * dim * sizeof(double));
  double *win = (double *)malloc((size_t)n * (5 * dim + 1) * sizeof(double));
  double *scratch = (double *)malloc(cells * (dim + (hidden > dim ? hidden : dim)) * sizeof(double) + 64);
  int *tokens = (int *)malloc((size_t)n * sizeof(int)), *ids = (int *)malloc((size_t)n * sizeof(int));
  int *src = (int *)malloc((size_t)n * sizeof(int));
  int wr, wc, i, j, hh;
  if (!normed || !win || !scratch || !tokens || !ids || !src) {
    free(normed); free(win); free(scratch); free(tokens); free(ids); free(src);
    return TEC_ERR_NOMEM;
  }
  layer_norm_rows(&s->norm1, x, (int)cells, normed);
  for (wr = 0; wr < hp / ws; ++wr) {
    for (wc = 0; wc < wp / ws; ++wc) {
      double *in = win, *qkv = win + (size_t)n * dim, *att = qkv + (size_t)n * 3 * dim;
      double *logits = att + (size_t)n * dim;
      /* Gather the window in the rolled frame; padding is zeros, id -1. */
      for (i = 0; i < n; ++i) {
        const int r = wr * ws + i / ws, c = wc * ws + i % ws;
        const int oy = (r + shift) % hp, ox = (c + shift) % wp;
        if (oy < h && ox < w) {
          src[i] = oy * w + ox;
          ids[i] = region(r, hp, ws, shift) * 3 + region(c, wp, ws, shift);
          memcpy(in + (size_t)i * dim, normed + (size_t)src[i] * dim, dim * sizeof(double));
        } else {
          src[i] = -1;
          ids[i] = -1;
          memset(in + (size_t)i * dim, 0, dim * sizeof(double));
        }
      }
      dense_rows(&s->qkv, in, n, qkv);
      for (i = 0; i < n; ++i) {
        if (src[i] < 0) continue;
        for (hh = 0; hh < heads; ++hh) {
          const double *q = qkv + (size_t)i * 3 * dim + hh * hd;
          int count = 0;
          for (j = 0; j < n; ++j) {
            if (ids[j] != ids[i]) continue;
            logits[count] = scale_round(dot(q, qkv + (size_t)j * 3 * dim + dim + hh * hd, hd),
                                        1.0 / TEC_ONE) +
                            s->bias[((size_t)hh * n + i) * n + j];
            tokens[count++] = j;
          }
          attend(m->exp_table, logits, tokens, count, qkv + 2 * dim + hh * hd,
                 (size_t)3 * dim, hd, att + (size_t)i * dim + hh * hd);
        }
      }
      for (i = 0; i < n; ++i)
        if (src[i] < 0) memset(att + (size_t)i * dim, 0, dim * sizeof(double));
      dense_rows(&s->proj, att, n, in);
      for (i = 0; i < n; ++i) {
        if (src[i] < 0) continue;
        for (j = 0; j < dim; ++j) {
          double *v = x + (size_t)src[i] * dim + j;
          *v = clampv(*v + in[(size_t)i * dim + j]);
        }
      }
    }
  }
  mlp_residual(&s->norm2, &s->fc1, &s->fc2, m->gelu, x, (int)cells, scratch);
  free(normed); free(win); free(scratch); free(tokens); free(ids); free(src);
  return TEC_OK;
}

static int floor_div2(int a) { return a >= 0 ? a / 2 : -((1 - a) / 2); }

/* The input row (or column) that kernel tap t of output o reads along one axis, or -1 where
 * none does (a transposed convolution's taps between input samples); may lie outside the
 * input, which the caller skips. */
static int conv_source(int o, int t, int k, int stride, int before) {
  int num;
  if (stride == 1) return o + t - k / 2;
  num = o % 2 + before - t;
  if (((num % 2) + 2) % 2) return -1;
  return o / 2 + floor_div2(num);
}

/* One "same" convolution (stride 1) or transposed convolution (stride 2) of
 * x [h][w][n] into out [h'][w'][m] (layers.conv2d / conv2d_transpose). */
static void conv_layer(const conv_p *c, const double *x, int h, int w, double *out) {
  const int k = c->k, before = c->stride == 2 ? (k - 2 > 0 ? k - 2 : 0) / 2 : 0;
  const int oh = h * c->stride, ow = w * c->stride;
  int oy, ox, ty, tx, j, i;
  for (oy = 0; oy < oh; ++oy) {
    for (ox = 0; ox < ow; ++ox) {
      double *o = out + ((size_t)oy * ow + ox) * c->m;
      for (j = 0; j < c->m; ++j) o[j] = c->b[j];
      for (ty = 0; ty < k; ++ty) {
        const int sy = conv_source(oy, ty, k, c->stride, before);
        if (sy < 0 || sy >= h) continue;
        for (tx = 0; tx < k; ++tx) {
          const int sx = conv_source(ox, tx, k, c->stride, before);
          const double *in, *wt;
          if (sx < 0 || sx >= w) continue;
          in = x + ((size_t)sy * w + sx) * c->n;
          wt = c->w + ((size_t)ty * k + tx) * c->n * c->m;
          for (i = 0; i < c->n; ++i) {
            const double a = in[i];
            const double *wr = wt + (size_t)i * c->m;
            for (j = 0; j < c->m; ++j) o[j] += a * wr[j];
          }
        }
      }
      for (j = 0; j < c->m; ++j) {
        double v = round_clamped(o[j], c->scale[j]);
        o[j] = c->relu && v < 0 ? 0.0 : v;
      }
    }
  }
}

int tec_hyper_features(const tec_model *m, const int32_t *z_symbols, int h, int w,
                       double *features, char *err, size_t err_size) {
  const int cz = m->info.hyper_channels, d = m->info.hyper_features;
  const int hz = (h + 3) / 4, wz = (w + 3) / 4;
  size_t biggest = (size_t)hz * wz * cz, cells = (size_t)hz * wz;
  int gh = hz, gw = wz, i, status = TEC_OK;
  double *a, *b;
  if (h < 1 || w < 1) {
    set_error(err, err_size, "empty latent grid");
    return TEC_ERR_ARG;
  }
  /* The widest map any layer makes: every layer at most 4x the cells. */
  if (m->cnn) {
    size_t c = cells;
    for (i = 0; i < m->num_conv; ++i) {
      c *= (size_t)m->conv[i].stride * m->conv[i].stride;
      if (c * m->conv[i].m > biggest) biggest = c * m->conv[i].m;
    }
  } else {
    const size_t wide = cells * 4 * (size_t)(m->resample1.m > m->resample0.m ? m->resample1.m : m->resample0.m);
    biggest = wide > biggest ? wide : biggest;
  }
  a = (double *)malloc(biggest * sizeof(double));
  b = (double *)malloc(biggest * sizeof(double));
  if (!a || !b) {
    free(a); free(b);
    set_error(err, err_size, "out of memory");
    return TEC_ERR_NOMEM;
  }
  for (i = 0; i < (int)(cells * cz); ++i)
    a[i] = (double)z_symbols[i] * TEC_ONE + m->z_offset[i % cz];
  if (m->cnn) {
    int cur = cz;
    for (i = 0; i < m->num_conv; ++i) {
      double *t;
      conv_layer(&m->conv[i], a, gh, gw, b);
      gh *= m->conv[i].stride;
      gw *= m->conv[i].stride;
      cur = m->conv[i].m;
      t = a; a = b; b = t;
    }
    (void)cur;
  } else {
    dense_rows(&m->resample0, a, (int)cells, b);
    depth_to_space(b, gh, gw, m->resample0.m / 4, a);
    gh *= 2;
    gw *= 2;
    for (i = 0; i < m->num_swin && status == TEC_OK; ++i)
      status = swin_block(m, &m->swin[i], a, gh, gw);
    dense_rows(&m->resample1, a, gh * gw, b);
    depth_to_space(b, gh, gw, d, a);
    gh *= 2;
    gw *= 2;
  }
  if (status == TEC_OK && (gh < h || gw < w)) status = TEC_ERR_MODEL;
  if (status == TEC_OK) {
    int y;
    for (y = 0; y < h; ++y)
      memcpy(features + (size_t)y * w * d, a + (size_t)y * gw * d, (size_t)w * d * sizeof(double));
  } else {
    set_error(err, err_size, status == TEC_ERR_NOMEM ? "out of memory"
                                                      : "hyper synthesis output too small");
  }
  free(a);
  free(b);
  return status;
}

/* ------------------------------------------------------ the coding loop -- */

/* What the context model of one image needs between steps. */
typedef struct loop {
  const tec_model *m;
  int h, w, k, c, dim, window, slots, tokens; /* tokens = slots * k + 1 */
  int *slot_di, *slot_dj, *slot_full;         /* candidate slots */
  int own_slot;
  int *rank;           /* serial: zigzag rank of every position */
  const double *hyper; /* [h][w][D] */
  double *y_hat;       /* [h][w][M] */
  int max_batch;
  int *batch_i, *batch_j;
  double *kv;          /* [batch][block][token][2 dim] */
  double *hyper_token; /* [batch][dim] */
  /* scratch */
  double *tok_in, *tok, *tok_norm, *tok_kv, *q, *q2, *q3, *att, *logits, *head;
  int *job_b, *job_t, *visible;
  long step;      /* coding steps done */
  long flip_step; /* tec_decode_drifted's step, or -1 */
  const tec_progress *progress; /* or NULL */
  uint64_t chunks, reported;    /* chunks coded; at the last progress call */
} loop;

static void loop_free(loop *l) {
  free(l->slot_di); free(l->slot_dj); free(l->slot_full); free(l->rank);
  free(l->batch_i); free(l->batch_j); free(l->kv); free(l->hyper_token);
  free(l->tok_in); free(l->tok); free(l->tok_norm); free(l->tok_kv);
  free(l->q); free(l->q2); free(l->q3); free(l->att); free(l->logits); free(l->head);
  free(l->job_b); free(l->job_t); free(l->visible);
}

static void *alloc(size_t count, size_t size, int *ok) {
  void *p = malloc(count ? count * size : 1);
  if (!p) *ok = 0;
  return p;
}

static int loop_init(loop *l, const tec_model *m, int h, int w, const double *hyper,
                     double *y_hat) {
  const int ws = m->info.window, r = ws / 2, k = m->info.num_groups;
  int ok = 1, di, dj, hidden = 0, i, jobs;
  size_t width;
  memset(l, 0, sizeof *l);
  l->flip_step = -1;
  l->m = m; l->h = h; l->w = w; l->k = k;
  l->c = m->info.latent_channels / k;
  l->dim = m->dim;
  l->window = ws;
  l->hyper = hyper;
  l->y_hat = y_hat;
  l->slot_di = (int *)alloc((size_t)ws * ws, sizeof(int), &ok);
  l->slot_dj = (int *)alloc((size_t)ws * ws, sizeof(int), &ok);
  l->slot_full = (int *)alloc((size_t)ws * ws, sizeof(int), &ok);
  if (!ok) return TEC_ERR_NOMEM;
  /* Later anti-diagonals are never visible, nor (wavefront) other positions of
   * the target's own: such slots are left out (entropy_model.candidate_slots). */
  for (di = -r; di <= r; ++di)
    for (dj = -r; dj <= r; ++dj) {
      const int visible = m->info.serial ? di + dj <= 0 : (di + dj < 0 || (!di && !dj));
      if (!visible) continue;
      if (!di && !dj) l->own_slot = l->slots;
      l->slot_di[l->slots] = di;
      l->slot_dj[l->slots] = dj;
      l->slot_full[l->slots++] = (di + r) * ws + dj + r;
    }
  l->tokens = l->slots * k + 1;
  if (m->info.serial) {
    int d, n = 0;
    l->rank = (int *)alloc((size_t)h * w, sizeof(int), &ok);
    if (!ok) return TEC_ERR_NOMEM;
    for (d = 0; d < h + w - 1; ++d) {
      const int lo = d - (w - 1) > 0 ? d - (w - 1) : 0, hi = d < h - 1 ? d : h - 1;
      for (i = 0; i <= hi - lo; ++i) {
        const int row = d % 2 ? lo + i : hi - i;
        l->rank[row * w + (d - row)] = n++;
      }
    }
    l->max_batch = 1;
  } else {
    l->max_batch = h < w ? h : w;
  }
  for (i = 0; i < m->num_blocks; ++i) hidden = m->blocks[i].fc1.m > hidden ? m->blocks[i].fc1.m : hidden;
  width = (size_t)(2 * l->c > l->dim ? 2 * l->c : l->dim);
  jobs = l->max_batch * l->tokens;
  l->batch_i = (int *)alloc((size_t)l->max_batch, sizeof(int), &ok);
  l->batch_j = (int *)alloc((size_t)l->max_batch, sizeof(int), &ok);
  l->kv = (double *)alloc((size_t)l->max_batch * m->num_blocks * l->tokens * 2 * l->dim,
                          sizeof(double), &ok);
  l->hyper_token = (double *)alloc((size_t)l->max_batch * l->dim, sizeof(double), &ok);
  l->tok_in = (double *)alloc((size_t)jobs * (l->c > m->info.hyper_features ? l->c : m->info.hyper_features), sizeof(double), &ok);
  l->tok = (double *)alloc((size_t)jobs * l->dim, sizeof(double), &ok);
  l->tok_norm = (double *)alloc((size_t)jobs * l->dim, sizeof(double), &ok);
  l->tok_kv = (double *)alloc((size_t)jobs * 2 * l->dim, sizeof(double), &ok);
  l->q = (double *)alloc((size_t)l->max_batch * l->dim, sizeof(double), &ok);
  l->q2 = (double *)alloc((size_t)l->max_batch * (l->dim + hidden), sizeof(double), &ok);
  l->q3 = (double *)alloc((size_t)l->max_batch * l->dim, sizeof(double), &ok);
  l->att = (double *)alloc((size_t)l->max_batch * l->dim, sizeof(double), &ok);
  l->logits = (double *)alloc((size_t)l->tokens, sizeof(double), &ok);
  l->head = (double *)alloc((size_t)l->max_batch * width * 2, sizeof(double), &ok);
  l->job_b = (int *)alloc((size_t)jobs, sizeof(int), &ok);
  l->job_t = (int *)alloc((size_t)jobs, sizeof(int), &ok);
  l->visible = (int *)alloc((size_t)l->tokens, sizeof(int), &ok);
  return ok ? TEC_OK : TEC_ERR_NOMEM;
}

/* Whether position (pi, pj) precedes the target (ti, tj) in coding order. */
static int earlier(const loop *l, int pi, int pj, int ti, int tj) {
  if (l->rank) return l->rank[pi * l->w + pj] < l->rank[ti * l->w + tj];
  return pi + pj < ti + tj;
}

static int inside(const loop *l, int i, int j) { return i >= 0 && i < l->h && j >= 0 && j < l->w; }

static double *kv_at(const loop *l, int b, int block, int token) {
  return l->kv + (((size_t)b * l->m->num_blocks + block) * l->tokens + token) * 2 * l->dim;
}

/* Computes the keys and values of the context tokens the step's targets see
 * for the first time: at group 0 every visible chunk of the other slots and
 * the hyperprior token; at group g the own position's chunk g - 1.  Each
 * token is the target's alone, so none is computed twice. */
static void update_context(loop *l, int nb, int g) {
  const tec_model *m = l->m;
  const int k = l->k, c = l->c, dim = l->dim, M = m->info.latent_channels;
  int jobs = 0, b, s, gg, i, block;
  for (b = 0; b < nb; ++b) {
    const int ti = l->batch_i[b], tj = l->batch_j[b];
    for (s = 0; s < l->slots; ++s) {
      const int pi = ti + l->slot_di[s], pj = tj + l->slot_dj[s];
      if (!inside(l, pi, pj)) continue;
      if (g == 0 && s == l->own_slot) continue;
      if (g == 0 && !earlier(l, pi, pj, ti, tj)) continue;
      if (g > 0 && s != l->own_slot) continue;
      for (gg = (g ? g - 1 : 0); gg < (g ? g : k); ++gg) {
        memcpy(l->tok_in + (size_t)jobs * c, l->y_hat + ((size_t)pi * l->w + pj) * M + gg * c,
               (size_t)c * sizeof(double));
        l->job_b[jobs] = b;
        l->job_t[jobs++] = s * k + gg;
      }
    }
  }
  dense_rows(&m->chunk_embed, l->tok_in, jobs, l->tok);
  for (i = 0; i < jobs; ++i) {
    const int s = l->job_t[i] / k, gg = l->job_t[i] % k;
    const double *ge = m->group_embedding + (size_t)gg * dim;
    const double *se = m->slot_embedding + (size_t)l->slot_full[s] * dim;
    double *t = l->tok + (size_t)i * dim;
    int j;
    for (j = 0; j < dim; ++j) t[j] = clampv(t[j] + ge[j] + se[j]);
  }
  if (g == 0) { /* the hyperprior tokens, last */
    const int D = m->info.hyper_features;
    for (b = 0; b < nb; ++b)
      memcpy(l->tok_in + (size_t)b * D,
             l->hyper + ((size_t)l->batch_i[b] * l->w + l->batch_j[b]) * D,
             (size_t)D * sizeof(double));
    dense_rows(&m->hyper_embed, l->tok_in, nb, l->hyper_token);
    for (b = 0; b < nb; ++b) {
      memcpy(l->tok + (size_t)jobs * dim, l->hyper_token + (size_t)b * dim, (size_t)dim * sizeof(double));
      l->job_b[jobs] = b;
      l->job_t[jobs++] = l->slots * k;
    }
  }
  for (i = 0; i < jobs; ++i) normalize(l->tok + (size_t)i * dim, dim, m->context_eps,
                                       l->tok_norm + (size_t)i * dim);
  for (block = 0; block < m->num_blocks; ++block) {
    dense_rows(&m->blocks[block].key_value, l->tok_norm, jobs, l->tok_kv);
    for (i = 0; i < jobs; ++i)
      memcpy(kv_at(l, l->job_b[i], block, l->job_t[i]), l->tok_kv + (size_t)i * 2 * dim,
             (size_t)2 * dim * sizeof(double));
  }
}

/* The tokens target b sees at group g: visible chunks, then the hyper token. */
static int visible_tokens(loop *l, int b, int g) {
  const int ti = l->batch_i[b], tj = l->batch_j[b];
  int s, gg, n = 0;
  for (s = 0; s < l->slots; ++s) {
    const int pi = ti + l->slot_di[s], pj = tj + l->slot_dj[s];
    if (!inside(l, pi, pj)) continue;
    if (s == l->own_slot) {
      for (gg = 0; gg < g; ++gg) l->visible[n++] = s * l->k + gg;
    } else if (earlier(l, pi, pj, ti, tj)) {
      for (gg = 0; gg < l->k; ++gg) l->visible[n++] = s * l->k + gg;
    }
  }
  l->visible[n++] = l->slots * l->k;
  return n;
}

/* (mean, log_scale) [nb][2c] of group g at the batch's positions into l->head. */
static void predict(loop *l, int nb, int g) {
  const tec_model *m = l->m;
  const int dim = l->dim, c = l->c;
  int b, i, block;
  for (b = 0; b < nb; ++b)
    for (i = 0; i < dim; ++i)
      l->q[(size_t)b * dim + i] = clampv(l->hyper_token[(size_t)b * dim + i] +
                                         m->query_embedding[(size_t)g * dim + i]);
  for (block = 0; block < m->num_blocks; ++block) {
    const cross_p *p = &m->blocks[block];
    const int heads = p->heads, hd = dim / heads;
    layer_norm_rows(&p->norm_query, l->q, nb, l->q2);
    dense_rows(&p->query, l->q2, nb, l->q3);
    for (b = 0; b < nb; ++b) {
      const int count = visible_tokens(l, b, g);
      const double *kv = kv_at(l, b, block, 0);
      int hh;
      for (hh = 0; hh < heads; ++hh) {
        const double *q = l->q3 + (size_t)b * dim + hh * hd;
        for (i = 0; i < count; ++i)
          l->logits[i] = scale_round(dot(q, kv + (size_t)l->visible[i] * 2 * dim + hh * hd, hd),
                                     1.0 / TEC_ONE);
        attend(m->exp_table, l->logits, l->visible, count, kv + dim + hh * hd,
               (size_t)2 * dim, hd, l->att + (size_t)b * dim + hh * hd);
      }
    }
    dense_rows(&p->proj, l->att, nb, l->q2);
    for (i = 0; i < nb * dim; ++i) l->q[i] = clampv(l->q[i] + l->q2[i]);
    mlp_residual(&p->norm_mlp, &p->fc1, &p->fc2, m->gelu, l->q, nb, l->q2);
  }
  layer_norm_rows(&m->head_norm, l->q, nb, l->q2);
  {
    dense_p head;
    head.n = dim;
    head.m = 2 * c;
    head.w = m->head_w + (size_t)g * dim * 2 * c;
    head.b = m->head_b + (size_t)g * 2 * c;
    head.scale = m->head_scale + (size_t)g * 2 * c;
    dense_rows(&head, l->q2, nb, l->head);
  }
}

static int table_index(const tec_model *m, double log_scale) {
  int i, count = 0;
  for (i = 0; i < m->num_thresholds; ++i) count += m->thresholds[i] <= log_scale;
  return count;
}

/* The coder of one run of the loop: decodes, or encodes from the float y. */
typedef struct coder {
  rc_decoder *dec;
  rc_encoder *enc;
  unsigned char **buf;
  const float *y;
  int status;
} coder;

static int encode_growing(rc_encoder *enc, unsigned char **buf, const rc_table *t,
                          int32_t index, int32_t value, int finish) {
  for (;;) {
    unsigned char *grown;
    const int status = finish ? rc_encoder_finish(enc) : rc_encode(enc, t, index, value);
    if (status != RC_ERR_BUFFER_FULL) return status;
    if (enc->cap > ((size_t)-1) / 4) return RC_ERR_NOMEM;
    grown = (unsigned char *)realloc(*buf, enc->cap * 2);
    if (!grown) return RC_ERR_NOMEM;
    *buf = grown;
    rc_encoder_set_buffer(enc, grown, enc->cap * 2);
  }
}

/* Codes the c values of group g at batch position b, after `predict`. */
static int code_chunk(loop *l, coder *cd, int b, int g) {
  const tec_model *m = l->m;
  const int c = l->c, M = m->info.latent_channels;
  const size_t base = ((size_t)l->batch_i[b] * l->w + l->batch_j[b]) * M + (size_t)g * c;
  const double *out = l->head + (size_t)b * 2 * c;
  int ch;
  for (ch = 0; ch < c; ++ch) {
    const double mean = out[ch];
    int index = table_index(m, out[c + ch]);
    if (l->step == l->flip_step && b == 0 && ch == 0) index = (index + m->y_rows / 2) % m->y_rows;
    int32_t symbol;
    int status;
    if (cd->dec) {
      status = rc_decode(cd->dec, &m->y_table, index, &symbol);
      symbol += m->y_cdf_offset[index];
    } else {
      double v = nearbyint((double)cd->y[base + ch] - mean / TEC_ONE);
      v = v > SYMBOL_LIMIT ? SYMBOL_LIMIT : (v < -SYMBOL_LIMIT ? -SYMBOL_LIMIT : v);
      symbol = (int32_t)v;
      status = encode_growing(cd->enc, cd->buf, &m->y_table, index,
                              symbol - m->y_cdf_offset[index], 0);
    }
    if (status != RC_OK) return status;
    l->y_hat[base + ch] = (double)symbol * TEC_ONE + mean;
  }
  return RC_OK;
}

/* coding_loop's status when the progress callback stops it (beside the RC_ codes). */
#define LOOP_STOPPED (-1000)

/* Tells the progress callback of the chunks coded, if `interval` more are done since
 * its last call (or all are); nonzero if it stops the coding. */
static int report_progress(loop *l) {
  const tec_progress *p = l->progress;
  const uint64_t total = (uint64_t)l->h * l->w * l->k;
  if (!p || !p->call) return 0;
  if (l->chunks < total && l->chunks - l->reported < (p->interval ? p->interval : 1))
    return 0;
  l->reported = l->chunks;
  return p->call(p->opaque, l->chunks, total) != 0;
}

/* Runs the context model and the coder over the latent in coding order. */
static int coding_loop(loop *l, coder *cd) {
  const int h = l->h, w = l->w, k = l->k;
  int d, g, b, status;
  for (d = 0; d < h + w - 1; ++d) {
    const int lo = d - (w - 1) > 0 ? d - (w - 1) : 0, hi = d < h - 1 ? d : h - 1;
    int first, count;
    /* wavefront: one batch per anti-diagonal (i ascending); serial: each
     * position alone, in zigzag order */
    for (first = 0; first <= hi - lo; first += count) {
      int nb = 0;
      count = l->rank ? 1 : hi - lo + 1;
      for (b = 0; b < count; ++b) {
        const int row = l->rank ? (d % 2 ? lo + first : hi - first) : lo + b;
        l->batch_i[nb] = row;
        l->batch_j[nb++] = d - row;
      }
      for (g = 0; g < k; ++g) {
        update_context(l, nb, g);
        predict(l, nb, g);
        for (b = 0; b < nb; ++b)
          if ((status = code_chunk(l, cd, b, g)) != RC_OK) return status;
        ++l->step;
        l->chunks += (uint64_t)nb;
        if (report_progress(l)) return LOOP_STOPPED;
      }
    }
  }
  return RC_OK;
}

static uint64_t mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9u;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBu;
  return x ^ (x >> 31);
}

uint64_t tec_latent_check(const int32_t *z, size_t nz, const double *y, size_t ny) {
  uint64_t sum = 0;
  size_t i;
  for (i = 0; i < nz; ++i) sum += mix(mix(i + 1) ^ (uint64_t)(int64_t)z[i]);
  for (i = 0; i < ny; ++i) sum += mix(mix(nz + i + 1) ^ (uint64_t)(int64_t)y[i]);
  return sum;
}

void tec_grids(int height, int width, int *h, int *w, int *hz, int *wz) {
  *h = (height + 15) / 16;
  *w = (width + 15) / 16;
  *hz = (*h + 3) / 4;
  *wz = (*w + 3) / 4;
}

int tec_stream_holds(uint64_t n, uint64_t bytes, int d, int p) {
  /* n < 2^40 and d <= 2^16 for any image the header can declare: no overflow */
  return n * (uint64_t)d <= (bytes + STREAM_SLACK) << (p + 3);
}

static uint64_t min_stream_bytes(uint64_t n, int d, int p) {
  const uint64_t unit = (uint64_t)1 << (p + 3), need = (n * (uint64_t)d + unit - 1) / unit;
  return need > STREAM_SLACK ? need - STREAM_SLACK : 0;
}

static int all_finite(const float *x, size_t n) {
  size_t i;
  for (i = 0; i < n; ++i)
    if (!isfinite(x[i])) return 0;
  return 1;
}

static const char *coder_message(int status) {
  return rc_status_string(status);
}

static void set_stopped(char *err, size_t err_size) {
  set_error(err, err_size, "coding stopped by its progress callback");
}

static int decode_impl(const tec_model *m, int height, int width,
                       const unsigned char *z_stream, size_t z_len,
                       const unsigned char *y_stream, size_t y_len, uint64_t check,
                       uint64_t max_pixels, long flip_step, int32_t *z_symbols,
                       double *y_hat, const tec_progress *progress, char *err,
                       size_t err_size);

int tec_decode(const tec_model *m, int height, int width, const unsigned char *z_stream,
               size_t z_len, const unsigned char *y_stream, size_t y_len, uint64_t check,
               uint64_t max_pixels, int32_t *z_symbols, double *y_hat, char *err,
               size_t err_size) {
  return decode_impl(m, height, width, z_stream, z_len, y_stream, y_len, check, max_pixels,
                     -1, z_symbols, y_hat, NULL, err, err_size);
}

int tec_decode_progress(const tec_model *m, int height, int width,
                        const unsigned char *z_stream, size_t z_len,
                        const unsigned char *y_stream, size_t y_len, uint64_t check,
                        uint64_t max_pixels, int32_t *z_symbols, double *y_hat,
                        const tec_progress *progress, char *err, size_t err_size) {
  return decode_impl(m, height, width, z_stream, z_len, y_stream, y_len, check, max_pixels,
                     -1, z_symbols, y_hat, progress, err, err_size);
}

int tec_decode_drifted(const tec_model *m, int height, int width,
                       const unsigned char *z_stream, size_t z_len,
                       const unsigned char *y_stream, size_t y_len, uint64_t check,
                       uint64_t max_pixels, long flip_step, int32_t *z_symbols,
                       double *y_hat, char *err, size_t err_size) {
  return decode_impl(m, height, width, z_stream, z_len, y_stream, y_len, check, max_pixels,
                     flip_step, z_symbols, y_hat, NULL, err, err_size);
}

static int decode_impl(const tec_model *m, int height, int width,
                       const unsigned char *z_stream, size_t z_len,
                       const unsigned char *y_stream, size_t y_len, uint64_t check,
                       uint64_t max_pixels, long flip_step, int32_t *z_symbols,
                       double *y_hat, const tec_progress *progress, char *err,
                       size_t err_size) {
  const tec_info *in = &m->info;
  int h, w, hz, wz, status, consistent = 0;
  size_t nz, ny, i;
  rc_decoder dec;
  loop l;
  coder cd;
  double *hyper;
  if (height < 1 || width < 1 || height > 65535 || width > 65535) {
    set_error(err, err_size, "corrupt tflic file: zero image size");
    return TEC_ERR_ARG;
  }
  if (max_pixels && (uint64_t)height * (uint64_t)width > max_pixels) {
    set_error(err, err_size, "image of %dx%d pixels exceeds the limit of %llu", width, height,
              (unsigned long long)max_pixels);
    return TEC_ERR_LIMIT;
  }
  tec_grids(height, width, &h, &w, &hz, &wz);
  nz = (size_t)hz * wz * in->hyper_channels;
  ny = (size_t)h * w * in->latent_channels;
  if (!tec_stream_holds(nz, z_len, in->z_cost_d, in->z_cost_p) ||
      !tec_stream_holds(ny, y_len, in->y_cost_d, in->y_cost_p)) {
    set_error(err, err_size, "corrupt tflic file: its streams are too short for the image "
              "size it declares");
    return TEC_ERR_STREAM;
  }
  rc_decoder_init(&dec, z_stream, z_len);
  for (i = 0; i < nz; ++i) {
    const int ch = (int)(i % (size_t)in->hyper_channels);
    status = rc_decode(&dec, &m->z_table, ch, &z_symbols[i]);
    if (status != RC_OK) {
      set_error(err, err_size, "corrupt tflic file: %s (z stream)", coder_message(status));
      return TEC_ERR_STREAM;
    }
    z_symbols[i] += m->z_cdf_offset[ch];
  }
  rc_decoder_finish(&dec, &consistent);
  if (!consistent) {
    set_error(err, err_size, "corrupt tflic file: z stream ends early");
    return TEC_ERR_STREAM;
  }
  hyper = (double *)malloc((size_t)h * w * in->hyper_features * sizeof(double));
  if (!hyper) {
    set_error(err, err_size, "out of memory");
    return TEC_ERR_NOMEM;
  }
  status = tec_hyper_features(m, z_symbols, h, w, hyper, err, err_size);
  if (status != TEC_OK) {
    free(hyper);
    return status;
  }
  memset(y_hat, 0, ny * sizeof(double));
  status = loop_init(&l, m, h, w, hyper, y_hat);
  if (status == TEC_OK) {
    rc_decoder_init(&dec, y_stream, y_len);
    memset(&cd, 0, sizeof cd);
    cd.dec = &dec;
    l.flip_step = flip_step;
    l.progress = progress;
    status = coding_loop(&l, &cd);
    if (status == LOOP_STOPPED) {
      set_stopped(err, err_size);
      status = TEC_ERR_STOPPED;
    } else if (status != RC_OK) {
      set_error(err, err_size, "corrupt tflic file: %s (y stream)", coder_message(status));
      status = TEC_ERR_STREAM;
    } else if (tec_latent_check(z_symbols, nz, y_hat, ny) != check) {
      set_error(err, err_size, "decoded latents differ from the encoder's (desync: another "
                "entropy model or a corrupt stream)");
      status = TEC_ERR_DESYNC;
    } else {
      rc_decoder_finish(&dec, &consistent);
      if (!consistent) {
        set_error(err, err_size, "corrupt tflic file: y stream ends early");
        status = TEC_ERR_STREAM;
      }
    }
  } else {
    set_error(err, err_size, "out of memory");
  }
  loop_free(&l);
  free(hyper);
  return status;
}

/* A finished stream, padded with zero bytes to the stream-length rule. */
static int finish_stream(rc_encoder *enc, unsigned char **buf, const rc_table *t,
                         uint64_t n, int d, int p, size_t *len) {
  const int status = encode_growing(enc, buf, t, 0, 0, 1);
  uint64_t need;
  if (status != RC_OK) return status;
  *len = rc_encoder_length(enc);
  need = min_stream_bytes(n, d, p);
  if (need > *len) {
    unsigned char *grown = (unsigned char *)realloc(*buf, (size_t)need);
    if (!grown) return RC_ERR_NOMEM;
    memset(grown + *len, 0, (size_t)need - *len);
    *buf = grown;
    *len = (size_t)need;
  }
  return RC_OK;
}

int tec_encode(const tec_model *m, int h, int w, const float *y, const float *z,
               unsigned char **z_stream, size_t *z_len, unsigned char **y_stream,
               size_t *y_len, int32_t *z_symbols, double *y_hat_out, uint64_t *check,
               char *err, size_t err_size) {
  return tec_encode_progress(m, h, w, y, z, z_stream, z_len, y_stream, y_len, z_symbols,
                             y_hat_out, check, NULL, err, err_size);
}

int tec_encode_progress(const tec_model *m, int h, int w, const float *y, const float *z,
                        unsigned char **z_stream, size_t *z_len, unsigned char **y_stream,
                        size_t *y_len, int32_t *z_symbols, double *y_hat_out,
                        uint64_t *check, const tec_progress *progress, char *err,
                        size_t err_size) {
  const tec_info *in = &m->info;
  const int hz = (h + 3) / 4, wz = (w + 3) / 4;
  const size_t nz = (size_t)hz * wz * in->hyper_channels, ny = (size_t)h * w * in->latent_channels;
  int32_t *zs = NULL;
  double *hyper = NULL, *y_hat = y_hat_out;
  rc_encoder ze, ye;
  loop l;
  coder cd;
  int status = TEC_OK, rc = RC_OK;
  size_t i;
  *z_stream = *y_stream = NULL;
  memset(&l, 0, sizeof l);
  if (h < 1 || w < 1) {
    set_error(err, err_size, "empty latent");
    return TEC_ERR_ARG;
  }
  if (!all_finite(y, ny) || !all_finite(z, nz)) {
    set_error(err, err_size, "the model produced non-finite latents");
    return TEC_ERR_INPUT;
  }
  zs = (int32_t *)malloc(nz * sizeof(int32_t));
  hyper = (double *)malloc((size_t)h * w * in->hyper_features * sizeof(double));
  if (!y_hat) y_hat = (double *)malloc(ny * sizeof(double));
  *z_stream = (unsigned char *)malloc(256);
  *y_stream = (unsigned char *)malloc(256);
  if (!zs || !hyper || !y_hat || !*z_stream || !*y_stream) {
    status = TEC_ERR_NOMEM;
    goto done;
  }
  /* z: s = round(clip(z) - z_offset / 2^10), halves to even, as numpy and TF */
  rc_encoder_init(&ze, *z_stream, 256);
  for (i = 0; i < nz; ++i) {
    const int ch = (int)(i % (size_t)in->hyper_channels);
    const float v = z[i] > (float)SYMBOL_LIMIT ? (float)SYMBOL_LIMIT
                                              : (z[i] < -(float)SYMBOL_LIMIT ? -(float)SYMBOL_LIMIT : z[i]);
    zs[i] = (int32_t)nearbyint((double)v - m->z_offset[ch] / TEC_ONE);
    rc = encode_growing(&ze, z_stream, &m->z_table, ch, zs[i] - m->z_cdf_offset[ch], 0);
    if (rc != RC_OK) goto done;
  }
  rc = finish_stream(&ze, z_stream, &m->z_table, nz, in->z_cost_d, in->z_cost_p, z_len);
  if (rc != RC_OK) goto done;
  status = tec_hyper_features(m, zs, h, w, hyper, err, err_size);
  if (status != TEC_OK) goto done;
  status = loop_init(&l, m, h, w, hyper, y_hat);
  if (status != TEC_OK) goto done;
  rc_encoder_init(&ye, *y_stream, 256);
  memset(&cd, 0, sizeof cd);
  cd.enc = &ye;
  cd.buf = y_stream;
  cd.y = y;
  l.progress = progress;
  rc = coding_loop(&l, &cd);
  if (rc == LOOP_STOPPED) {
    rc = RC_OK;
    status = TEC_ERR_STOPPED;
    set_stopped(err, err_size);
    goto done;
  }
  if (rc != RC_OK) goto done;
  rc = finish_stream(&ye, y_stream, &m->y_table, ny, in->y_cost_d, in->y_cost_p, y_len);
  if (rc != RC_OK) goto done;
  *check = tec_latent_check(zs, nz, y_hat, ny);
  if (z_symbols) memcpy(z_symbols, zs, nz * sizeof(int32_t));
done:
  if (status == TEC_OK && rc != RC_OK) {
    status = rc == RC_ERR_NOMEM ? TEC_ERR_NOMEM : TEC_ERR_STREAM;
    if (rc != RC_ERR_NOMEM)
      set_error(err, err_size, "cannot code a latent: %s", rc_status_string(rc));
  }
  if (status == TEC_ERR_NOMEM) set_error(err, err_size, "out of memory");
  if (status != TEC_OK) {
    free(*z_stream);
    free(*y_stream);
    *z_stream = *y_stream = NULL;
  }
  loop_free(&l);
  free(zs);
  free(hyper);
  if (y_hat != y_hat_out) free(y_hat);
  return status;
}
