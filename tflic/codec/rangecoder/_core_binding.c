/* CPython binding of entropy_core.c; tflic/codec/rangecoder/entropy_core.py is the API.
 *
 * Arrays cross the boundary as buffers in the host's byte order (int32,
 * float32, float64), which the Python wrapper makes with numpy.  The coding
 * runs without the GIL; a progress callable, if given, is called with it, and an
 * exception it raises (or a pending signal's, e.g. KeyboardInterrupt) stops the
 * coding and propagates. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdlib.h>

#include "entropy_core.h"

static PyObject *CoreError;

typedef struct {
  PyObject_HEAD
  tec_model *model;
} ModelObject;

static void Model_dealloc(ModelObject *self) {
  tec_model_free(self->model);
  Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Model_init(ModelObject *self, PyObject *args, PyObject *kwds) {
  static char *kwlist[] = {"blob", NULL};
  Py_buffer blob;
  char err[256] = "";
  if (self->model) {
    PyErr_SetString(PyExc_RuntimeError, "Model is already initialised");
    return -1;
  }
  if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*", kwlist, &blob)) return -1;
  self->model = tec_model_load((const unsigned char *)blob.buf, (size_t)blob.len, err,
                               sizeof err);
  PyBuffer_Release(&blob);
  if (!self->model) {
    PyErr_SetString(CoreError, err);
    return -1;
  }
  return 0;
}

static int ready(ModelObject *self) {
  if (self->model) return 1;
  PyErr_SetString(PyExc_RuntimeError, "Model is not initialised");
  return 0;
}

static PyObject *Model_info(ModelObject *self, PyObject *unused) {
  tec_info in;
  (void)unused;
  if (!ready(self)) return NULL;
  tec_model_info(self->model, &in);
  return Py_BuildValue(
      "{s:i,s:i,s:i,s:i,s:s,s:i,s:(ii),s:(ii)}", "latent_channels", in.latent_channels,
      "hyper_channels", in.hyper_channels, "num_groups", in.num_groups, "window", in.window,
      "mode", in.serial ? "serial" : "wavefront", "hyper_features", in.hyper_features,
      "y_cost", in.y_cost_d, in.y_cost_p, "z_cost", in.z_cost_d, in.z_cost_p);
}

/* Whether a buffer holds exactly `count` items of `size` bytes. */
static int sized(Py_buffer *view, size_t count, size_t size, const char *what) {
  if ((size_t)view->len == count * size) return 1;
  PyErr_Format(PyExc_ValueError, "%s: %zd bytes, expected %zu", what, view->len,
               count * size);
  return 0;
}

/* A Python progress callable, called from the coding loop (tec_progress). */
typedef struct {
  PyObject *callable; /* or NULL */
  PyThreadState *saved; /* this thread's state while the GIL is released */
} py_progress;

static int call_progress(void *opaque, uint64_t done, uint64_t total) {
  py_progress *p = (py_progress *)opaque;
  PyObject *result;
  int stop = 0;
  PyEval_RestoreThread(p->saved);
  /* Signals first: Ctrl-C interrupts a long coding at its next report. */
  if (PyErr_CheckSignals() < 0) {
    stop = 1;
  } else {
    result = PyObject_CallFunction(p->callable, "KK", (unsigned long long)done,
                                   (unsigned long long)total);
    if (result)
      Py_DECREF(result);
    else
      stop = 1;
  }
  p->saved = PyEval_SaveThread();
  return stop;
}

/* The tec_progress of an optional callable; NULL without one. */
static const tec_progress *progress_of(PyObject *callable, unsigned long long interval,
                                       py_progress *p, tec_progress *out) {
  p->callable = callable == Py_None ? NULL : callable;
  p->saved = NULL;
  if (!p->callable) return NULL;
  out->call = call_progress;
  out->opaque = p;
  out->interval = interval;
  return out;
}

static int check_callable(PyObject *callable) {
  if (callable == Py_None || PyCallable_Check(callable)) return 1;
  PyErr_SetString(PyExc_TypeError, "progress must be callable or None");
  return 0;
}

static PyObject *raise_status(int status, const char *err) {
  /* An exception of the progress callable is the caller's to see, unchanged. */
  if (status == TEC_ERR_STOPPED && PyErr_Occurred()) return NULL;
  if (status == TEC_ERR_NOMEM) return PyErr_NoMemory();
  PyErr_SetString(CoreError, err);
  return NULL;
}

/* decode(height, width, z_stream, y_stream, check, max_pixels, progress=None,
 * interval=0) -> (z_symbols int32 bytes, y_hat float64 bytearray). */
static PyObject *Model_decode(ModelObject *self, PyObject *args, PyObject *kwds) {
  static char *kwlist[] = {"height", "width", "z_stream", "y_stream", "check",
                           "max_pixels", "progress", "interval", NULL};
  int height, width, h, w, hz, wz, status;
  unsigned long long check, max_pixels, interval = 0;
  Py_buffer z, y;
  PyObject *zs = NULL, *yh = NULL, *callable = Py_None;
  py_progress pp;
  tec_progress tp;
  const tec_progress *progress;
  tec_info in;
  char err[256] = "";
  if (!ready(self)) return NULL;
  if (!PyArg_ParseTupleAndKeywords(args, kwds, "iiy*y*KK|OK", kwlist, &height, &width, &z,
                                   &y, &check, &max_pixels, &callable, &interval))
    return NULL;
  if (!check_callable(callable)) {
    PyBuffer_Release(&z);
    PyBuffer_Release(&y);
    return NULL;
  }
  progress = progress_of(callable, interval, &pp, &tp);
  tec_model_info(self->model, &in);
  if (height < 1 || width < 1 || height > 65535 || width > 65535) {
    PyBuffer_Release(&z);
    PyBuffer_Release(&y);
    PyErr_SetString(CoreError, "corrupt tflic file: image size outside 1..65535");
    return NULL;
  }
  tec_grids(height, width, &h, &w, &hz, &wz);
  /* The limits first: nothing is allocated for a size the file may not have. */
  if ((max_pixels && (unsigned long long)height * width > max_pixels) ||
      !tec_stream_holds((uint64_t)hz * wz * in.hyper_channels, (uint64_t)z.len, in.z_cost_d,
                        in.z_cost_p) ||
      !tec_stream_holds((uint64_t)h * w * in.latent_channels, (uint64_t)y.len, in.y_cost_d,
                        in.y_cost_p)) {
    status = tec_decode(self->model, height, width, z.buf, (size_t)z.len, y.buf,
                        (size_t)y.len, check, max_pixels, NULL, NULL, err, sizeof err);
    PyBuffer_Release(&z);
    PyBuffer_Release(&y);
    return raise_status(status, err);
  }
  zs = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)hz * wz * in.hyper_channels * 4);
  yh = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)h * w * in.latent_channels * 8);
  if (!zs || !yh) {
    Py_XDECREF(zs);
    Py_XDECREF(yh);
    PyBuffer_Release(&z);
    PyBuffer_Release(&y);
    return NULL;
  }
  pp.saved = PyEval_SaveThread();
  status = tec_decode_progress(self->model, height, width, z.buf, (size_t)z.len, y.buf,
                               (size_t)y.len, check, max_pixels,
                               (int32_t *)PyBytes_AS_STRING(zs),
                               (double *)PyByteArray_AS_STRING(yh), progress, err,
                               sizeof err);
  PyEval_RestoreThread(pp.saved);
  PyBuffer_Release(&z);
  PyBuffer_Release(&y);
  if (status != TEC_OK) {
    Py_DECREF(zs);
    Py_DECREF(yh);
    return raise_status(status, err);
  }
  return Py_BuildValue("(NN)", zs, yh);
}

/* encode(h, w, y float32, z float32, progress=None, interval=0) ->
 * (z_stream, y_stream, check, y_hat). */
static PyObject *Model_encode(ModelObject *self, PyObject *args, PyObject *kwds) {
  static char *kwlist[] = {"h", "w", "y", "z", "progress", "interval", NULL};
  int h, w, status;
  Py_buffer y, z;
  tec_info in;
  unsigned char *zs = NULL, *ys = NULL;
  size_t zn = 0, yn = 0;
  uint64_t check = 0;
  unsigned long long interval = 0;
  PyObject *yh, *result = NULL, *callable = Py_None;
  py_progress pp;
  tec_progress tp;
  const tec_progress *progress;
  char err[256] = "";
  if (!ready(self)) return NULL;
  if (!PyArg_ParseTupleAndKeywords(args, kwds, "iiy*y*|OK", kwlist, &h, &w, &y, &z,
                                   &callable, &interval))
    return NULL;
  if (!check_callable(callable)) goto release;
  progress = progress_of(callable, interval, &pp, &tp);
  tec_model_info(self->model, &in);
  if (h < 1 || w < 1 || h > 4096 || w > 4096) {
    PyErr_SetString(PyExc_ValueError, "latent grid outside 1..4096");
    goto release;
  }
  if (!sized(&y, (size_t)h * w * in.latent_channels, 4, "y") ||
      !sized(&z, (size_t)((h + 3) / 4) * ((w + 3) / 4) * in.hyper_channels, 4, "z"))
    goto release;
  yh = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)h * w * in.latent_channels * 8);
  if (!yh) goto release;
  pp.saved = PyEval_SaveThread();
  status = tec_encode_progress(self->model, h, w, (const float *)y.buf, (const float *)z.buf,
                               &zs, &zn, &ys, &yn, NULL, (double *)PyByteArray_AS_STRING(yh),
                               &check, progress, err, sizeof err);
  PyEval_RestoreThread(pp.saved);
  if (status != TEC_OK) {
    Py_DECREF(yh);
    raise_status(status, err);
    goto release;
  }
  result = Py_BuildValue("(y#y#KN)", (const char *)zs, (Py_ssize_t)zn, (const char *)ys,
                         (Py_ssize_t)yn, (unsigned long long)check, yh);
  free(zs);
  free(ys);
release:
  PyBuffer_Release(&y);
  PyBuffer_Release(&z);
  return result;
}

/* hyper_features(z_symbols int32, h, w) -> float64 bytearray [h][w][D]. */
static PyObject *Model_hyper_features(ModelObject *self, PyObject *args) {
  int h, w, status;
  Py_buffer z;
  tec_info in;
  PyObject *out;
  char err[256] = "";
  if (!ready(self)) return NULL;
  if (!PyArg_ParseTuple(args, "y*ii", &z, &h, &w)) return NULL;
  tec_model_info(self->model, &in);
  if (h < 1 || w < 1 || h > 4096 || w > 4096 ||
      !sized(&z, (size_t)((h + 3) / 4) * ((w + 3) / 4) * in.hyper_channels, 4, "z_symbols")) {
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "latent grid outside 1..4096");
    PyBuffer_Release(&z);
    return NULL;
  }
  out = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)h * w * in.hyper_features * 8);
  if (!out) {
    PyBuffer_Release(&z);
    return NULL;
  }
  Py_BEGIN_ALLOW_THREADS
  status = tec_hyper_features(self->model, (const int32_t *)z.buf, h, w,
                              (double *)PyByteArray_AS_STRING(out), err, sizeof err);
  Py_END_ALLOW_THREADS
  PyBuffer_Release(&z);
  if (status != TEC_OK) {
    Py_DECREF(out);
    return raise_status(status, err);
  }
  return out;
}

static PyMethodDef Model_methods[] = {
    {"info", (PyCFunction)Model_info, METH_NOARGS, "The model's sizes and costs."},
    {"decode", (PyCFunction)(void (*)(void))Model_decode, METH_VARARGS | METH_KEYWORDS,
     "Decodes a file's streams."},
    {"encode", (PyCFunction)(void (*)(void))Model_encode, METH_VARARGS | METH_KEYWORDS,
     "Encodes an encoder's latents."},
    {"hyper_features", (PyCFunction)Model_hyper_features, METH_VARARGS, "h_s."},
    {NULL, NULL, 0, NULL}};

static PyTypeObject ModelType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tflic.codec.rangecoder._core.Model",
    .tp_basicsize = sizeof(ModelObject),
    .tp_dealloc = (destructor)Model_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The integer entropy model of one tflic model (entropy_core.c).",
    .tp_methods = Model_methods,
    .tp_init = (initproc)Model_init,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT, "_core", "CPython binding of entropy_core.c.", -1, NULL,
    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__core(void) {
  PyObject *m;
  if (PyType_Ready(&ModelType) < 0) return NULL;
  m = PyModule_Create(&core_module);
  if (!m) return NULL;
  CoreError = PyErr_NewException("tflic.codec.rangecoder._core.CoreError", PyExc_ValueError, NULL);
  Py_INCREF(CoreError);
  Py_INCREF(&ModelType);
  if (PyModule_AddObject(m, "CoreError", CoreError) < 0 ||
      PyModule_AddObject(m, "Model", (PyObject *)&ModelType) < 0) {
    Py_DECREF(m);
    return NULL;
  }
  return m;
}
