/* CPython binding of range_coder.c; tflic/codec/rangecoder/__init__.py is the API.
 *
 * Arrays cross the boundary as buffers of little-endian int32, so the module
 * needs neither numpy's C API nor a particular host byte order. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdlib.h>

#include "range_coder.h"

static PyObject *RangeCoderError;

static int32_t load_le32(const unsigned char *p) {
  return (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 |
                   (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
}

static void store_le32(unsigned char *p, int32_t value) {
  const uint32_t v = (uint32_t)value;
  p[0] = (unsigned char)v;
  p[1] = (unsigned char)(v >> 8);
  p[2] = (unsigned char)(v >> 16);
  p[3] = (unsigned char)(v >> 24);
}

/* Gets a read-only buffer of whole int32s; *count is their number. */
static int get_int32s(PyObject *obj, Py_buffer *view, Py_ssize_t *count,
                      const char *what) {
  if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE) < 0) return -1;
  if (view->len % 4) {
    PyErr_Format(PyExc_ValueError, "%s: byte length %zd is not a multiple of 4",
                 what, view->len);
    PyBuffer_Release(view);
    return -1;
  }
  *count = view->len / 4;
  return 0;
}

/* Parses a little-endian int32 table into *data (malloc'ed) and *table. */
static int load_table(PyObject *lookup, Py_ssize_t row_len, int32_t **data,
                      rc_table *table) {
  Py_buffer view;
  Py_ssize_t n, i;
  size_t bad = 0;
  int status;
  if (row_len < 0) {
    PyErr_SetString(RangeCoderError, "row_len must be >= 0");
    return -1;
  }
  if (get_int32s(lookup, &view, &n, "lookup") < 0) return -1;
  *data = (int32_t *)malloc(n ? (size_t)n * sizeof(int32_t) : 1);
  if (!*data) {
    PyBuffer_Release(&view);
    PyErr_NoMemory();
    return -1;
  }
  for (i = 0; i < n; ++i) {
    (*data)[i] = load_le32((const unsigned char *)view.buf + 4 * i);
  }
  PyBuffer_Release(&view);
  status = rc_table_init(table, *data, (size_t)n, (size_t)row_len, &bad);
  if (status == RC_ERR_TABLE) {
    PyErr_Format(RangeCoderError,
                 "malformed lookup table at entry %zu (of %zd)", bad, n);
  } else if (status == RC_ERR_NOMEM) {
    PyErr_NoMemory();
  } else if (status != RC_OK) {
    PyErr_SetString(RangeCoderError, rc_status_string(status));
  }
  if (status != RC_OK) {
    free(*data);
    *data = NULL;
    return -1;
  }
  return 0;
}

static void raise_symbol_error(int status, Py_ssize_t position, int32_t index,
                               int32_t value, const rc_table *table) {
  if (status == RC_ERR_INDEX) {
    PyErr_Format(RangeCoderError,
                 "table index %d at position %zd is not in [0, %zu)",
                 (int)index, position, table->num_rows);
  } else if (status == RC_ERR_VALUE) {
    PyErr_Format(RangeCoderError,
                 "value %d at position %zd cannot be coded with table row %d "
                 "(out of range, zero probability, or escape magnitude >= 2^%d)",
                 (int)value, position, (int)index, RC_MAX_ESCAPE_BITS);
  } else {
    PyErr_Format(RangeCoderError, "%s (at position %zd)",
                 rc_status_string(status), position);
  }
}

/* Row of element `i` in channel mode: tfc cycles through the rows by flat
 * position, which is the last-axis position when there are as many rows as
 * channels. */
static int32_t channel_row(Py_ssize_t i, size_t rows) {
  return rows ? (int32_t)((size_t)i % rows) : 0;
}

/* ---------------------------------------------------------------- Encoder -- */

typedef struct {
  PyObject_HEAD
  int32_t *table_data;
  rc_table table;
  rc_encoder enc;
  unsigned char *buf;
} EncoderObject;

static void Encoder_dealloc(EncoderObject *self) {
  rc_table_free(&self->table);
  free(self->table_data);
  free(self->buf);
  Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Encoder_init(EncoderObject *self, PyObject *args, PyObject *kwds) {
  static char *kwlist[] = {"lookup", "row_len", NULL};
  PyObject *lookup;
  Py_ssize_t row_len = 0;
  if (self->table_data) {
    PyErr_SetString(PyExc_RuntimeError, "Encoder is already initialised");
    return -1;
  }
  if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|n", kwlist, &lookup,
                                   &row_len)) {
    return -1;
  }
  if (load_table(lookup, row_len, &self->table_data, &self->table) < 0) {
    return -1;
  }
  self->buf = (unsigned char *)malloc(256);
  if (!self->buf) {
    PyErr_NoMemory();
    return -1;
  }
  rc_encoder_init(&self->enc, self->buf, 256);
  return 0;
}

/* Runs rc_encode (or rc_encoder_finish if `finish`), growing the buffer until
 * the output fits. */
static int encode_growing(EncoderObject *self, int32_t index, int32_t value,
                          int finish) {
  for (;;) {
    unsigned char *grown;
    size_t cap;
    int status = finish ? rc_encoder_finish(&self->enc)
                        : rc_encode(&self->enc, &self->table, index, value);
    if (status != RC_ERR_BUFFER_FULL) return status;
    if (self->enc.cap > ((size_t)PY_SSIZE_T_MAX) / 2) return RC_ERR_NOMEM;
    cap = self->enc.cap * 2;
    grown = (unsigned char *)realloc(self->buf, cap);
    if (!grown) return RC_ERR_NOMEM;
    self->buf = grown;
    rc_encoder_set_buffer(&self->enc, grown, cap);
  }
}

static int check_ready(EncoderObject *self) {
  if (!self->table_data) {
    PyErr_SetString(PyExc_RuntimeError, "Encoder is not initialised");
    return -1;
  }
  if (self->enc.finished) {
    PyErr_SetString(RangeCoderError, "encoder already finished");
    return -1;
  }
  return 0;
}

/* Validates all symbols, then encodes them, so a bad call changes nothing.
 * `indexes` is NULL in channel mode. */
static PyObject *encode_all(EncoderObject *self, const unsigned char *indexes,
                            const unsigned char *values, Py_ssize_t n) {
  Py_ssize_t i;
  const size_t rows = self->table.num_rows;
  for (i = 0; i < n; ++i) {
    const int32_t index = indexes ? load_le32(indexes + 4 * i)
                                  : channel_row(i, rows);
    const int32_t value = load_le32(values + 4 * i);
    const int status = rc_check(&self->table, index, value);
    if (status != RC_OK) {
      raise_symbol_error(status, i, index, value, &self->table);
      return NULL;
    }
  }
  for (i = 0; i < n; ++i) {
    const int32_t index = indexes ? load_le32(indexes + 4 * i)
                                  : channel_row(i, rows);
    const int status =
        encode_growing(self, index, load_le32(values + 4 * i), 0);
    if (status == RC_ERR_NOMEM) return PyErr_NoMemory();
    if (status != RC_OK) {
      raise_symbol_error(status, i, index, load_le32(values + 4 * i),
                         &self->table);
      return NULL;
    }
  }
  Py_RETURN_NONE;
}

static PyObject *Encoder_encode_index(EncoderObject *self, PyObject *args) {
  PyObject *index_obj, *value_obj, *result = NULL;
  Py_buffer index_view, value_view;
  Py_ssize_t n_index, n_value;
  if (!PyArg_ParseTuple(args, "OO", &index_obj, &value_obj)) return NULL;
  if (check_ready(self) < 0) return NULL;
  if (get_int32s(index_obj, &index_view, &n_index, "indexes") < 0) return NULL;
  if (get_int32s(value_obj, &value_view, &n_value, "values") < 0) {
    PyBuffer_Release(&index_view);
    return NULL;
  }
  if (n_index != n_value) {
    PyErr_Format(RangeCoderError, "%zd indexes but %zd values", n_index,
                 n_value);
  } else {
    result = encode_all(self, (const unsigned char *)index_view.buf,
                        (const unsigned char *)value_view.buf, n_value);
  }
  PyBuffer_Release(&index_view);
  PyBuffer_Release(&value_view);
  return result;
}

static PyObject *Encoder_encode_channel(EncoderObject *self, PyObject *arg) {
  Py_buffer view;
  Py_ssize_t n;
  PyObject *result;
  if (check_ready(self) < 0) return NULL;
  if (get_int32s(arg, &view, &n, "values") < 0) return NULL;
  result = encode_all(self, NULL, (const unsigned char *)view.buf, n);
  PyBuffer_Release(&view);
  return result;
}

static PyObject *Encoder_finish(EncoderObject *self, PyObject *unused) {
  int status;
  (void)unused;
  if (check_ready(self) < 0) return NULL;
  status = encode_growing(self, 0, 0, 1);
  if (status == RC_ERR_NOMEM) return PyErr_NoMemory();
  if (status != RC_OK) {
    PyErr_SetString(RangeCoderError, rc_status_string(status));
    return NULL;
  }
  return PyBytes_FromStringAndSize((const char *)self->buf,
                                   (Py_ssize_t)rc_encoder_length(&self->enc));
}

static PyMethodDef Encoder_methods[] = {
    {"encode_index", (PyCFunction)Encoder_encode_index, METH_VARARGS,
     "encode_index(indexes, values): int32le buffers of equal length."},
    {"encode_channel", (PyCFunction)Encoder_encode_channel, METH_O,
     "encode_channel(values): int32le buffer; row = position mod rows."},
    {"finish", (PyCFunction)Encoder_finish, METH_NOARGS,
     "finish() -> bytes: flushes and returns the stream."},
    {NULL, NULL, 0, NULL}};

static PyTypeObject EncoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tflic.codec.rangecoder._binding.Encoder",
    .tp_basicsize = sizeof(EncoderObject),
    .tp_dealloc = (destructor)Encoder_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Encoder(lookup, row_len=0): range encoder over an int32le table.",
    .tp_methods = Encoder_methods,
    .tp_init = (initproc)Encoder_init,
    .tp_new = PyType_GenericNew,
};

/* ---------------------------------------------------------------- Decoder -- */

typedef struct {
  PyObject_HEAD
  int32_t *table_data;
  rc_table table;
  rc_decoder dec;
  PyObject *stream; /* bytes; dec points into it. */
} DecoderObject;

static void Decoder_dealloc(DecoderObject *self) {
  rc_table_free(&self->table);
  free(self->table_data);
  Py_XDECREF(self->stream);
  Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Decoder_init(DecoderObject *self, PyObject *args, PyObject *kwds) {
  static char *kwlist[] = {"stream", "lookup", "row_len", NULL};
  PyObject *stream, *lookup;
  Py_ssize_t row_len = 0;
  if (self->table_data) {
    PyErr_SetString(PyExc_RuntimeError, "Decoder is already initialised");
    return -1;
  }
  if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|n", kwlist, &stream,
                                   &lookup, &row_len)) {
    return -1;
  }
  /* A private immutable copy, so the caller cannot change it under us. */
  if (PyBytes_CheckExact(stream)) {
    Py_INCREF(stream);
  } else {
    Py_buffer view;
    if (PyObject_GetBuffer(stream, &view, PyBUF_SIMPLE) < 0) return -1;
    stream = PyBytes_FromStringAndSize((const char *)view.buf, view.len);
    PyBuffer_Release(&view);
    if (!stream) return -1;
  }
  Py_XSETREF(self->stream, stream);
  if (load_table(lookup, row_len, &self->table_data, &self->table) < 0) {
    return -1;
  }
  rc_decoder_init(&self->dec, (const unsigned char *)PyBytes_AS_STRING(stream),
                  (size_t)PyBytes_GET_SIZE(stream));
  return 0;
}

/* Decodes n values into a new bytes object; `indexes` is NULL in channel mode.
 * Indexes are validated first, so a bad index leaves the decoder unchanged. */
static PyObject *decode_all(DecoderObject *self, const unsigned char *indexes,
                            Py_ssize_t n) {
  const size_t rows = self->table.num_rows;
  PyObject *out;
  unsigned char *p;
  Py_ssize_t i;
  if (!self->table_data) {
    PyErr_SetString(PyExc_RuntimeError, "Decoder is not initialised");
    return NULL;
  }
  if (self->dec.status != RC_OK) {
    PyErr_Format(RangeCoderError, "decoder already failed: %s",
                 rc_status_string(self->dec.status));
    return NULL;
  }
  for (i = 0; i < n; ++i) {
    const int32_t index = indexes ? load_le32(indexes + 4 * i)
                                  : channel_row(i, rows);
    if (index < 0 || (size_t)index >= rows) {
      raise_symbol_error(RC_ERR_INDEX, i, index, 0, &self->table);
      return NULL;
    }
  }
  if (n > PY_SSIZE_T_MAX / 4) return PyErr_NoMemory();
  out = PyBytes_FromStringAndSize(NULL, 4 * n);
  if (!out) return NULL;
  p = (unsigned char *)PyBytes_AS_STRING(out);
  for (i = 0; i < n; ++i) {
    const int32_t index = indexes ? load_le32(indexes + 4 * i)
                                  : channel_row(i, rows);
    int32_t value;
    const int status = rc_decode(&self->dec, &self->table, index, &value);
    if (status != RC_OK) {
      Py_DECREF(out);
      PyErr_Format(RangeCoderError, "%s (at position %zd, stream byte %zu of %zu)",
                   rc_status_string(status), i, self->dec.pos, self->dec.size);
      return NULL;
    }
    store_le32(p + 4 * i, value);
  }
  return out;
}

static PyObject *Decoder_decode_index(DecoderObject *self, PyObject *arg) {
  Py_buffer view;
  Py_ssize_t n;
  PyObject *result;
  if (get_int32s(arg, &view, &n, "indexes") < 0) return NULL;
  result = decode_all(self, (const unsigned char *)view.buf, n);
  PyBuffer_Release(&view);
  return result;
}

static PyObject *Decoder_decode_channel(DecoderObject *self, PyObject *arg) {
  const Py_ssize_t n = PyNumber_AsSsize_t(arg, PyExc_OverflowError);
  if (n == -1 && PyErr_Occurred()) return NULL;
  if (n < 0) {
    PyErr_SetString(RangeCoderError, "negative number of values");
    return NULL;
  }
  return decode_all(self, NULL, n);
}

static PyObject *Decoder_finish(DecoderObject *self, PyObject *unused) {
  int consistent = 0;
  (void)unused;
  if (!self->table_data) {
    PyErr_SetString(PyExc_RuntimeError, "Decoder is not initialised");
    return NULL;
  }
  rc_decoder_finish(&self->dec, &consistent);
  return PyBool_FromLong(consistent);
}

static PyMethodDef Decoder_methods[] = {
    {"decode_index", (PyCFunction)Decoder_decode_index, METH_O,
     "decode_index(indexes) -> int32le bytes, one value per index."},
    {"decode_channel", (PyCFunction)Decoder_decode_channel, METH_O,
     "decode_channel(count) -> int32le bytes; row = position mod rows."},
    {"finish", (PyCFunction)Decoder_finish, METH_NOARGS,
     "finish() -> bool: whether the stream was consumed consistently."},
    {NULL, NULL, 0, NULL}};

static PyTypeObject DecoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tflic.codec.rangecoder._binding.Decoder",
    .tp_basicsize = sizeof(DecoderObject),
    .tp_dealloc = (destructor)Decoder_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Decoder(stream, lookup, row_len=0): range decoder.",
    .tp_methods = Decoder_methods,
    .tp_init = (initproc)Decoder_init,
    .tp_new = PyType_GenericNew,
};

/* ----------------------------------------------------------------- module -- */

static struct PyModuleDef binding_module = {
    PyModuleDef_HEAD_INIT, "tflic.codec.rangecoder._binding",
    "C range coder compatible with tensorflow-compression.", -1, NULL,
    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__binding(void) {
  PyObject *m;
  if (PyType_Ready(&EncoderType) < 0 || PyType_Ready(&DecoderType) < 0) {
    return NULL;
  }
  m = PyModule_Create(&binding_module);
  if (!m) return NULL;
  RangeCoderError = PyErr_NewExceptionWithDoc(
      "tflic.codec.rangecoder.RangeCoderError",
      "Invalid table, index or value, or a corrupt stream.", PyExc_ValueError,
      NULL);
  if (!RangeCoderError ||
      PyModule_AddObjectRef(m, "RangeCoderError", RangeCoderError) < 0 ||
      PyModule_AddObjectRef(m, "Encoder", (PyObject *)&EncoderType) < 0 ||
      PyModule_AddObjectRef(m, "Decoder", (PyObject *)&DecoderType) < 0) {
    Py_DECREF(m);
    return NULL;
  }
  return m;
}
