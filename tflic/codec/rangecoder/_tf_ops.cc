// TensorFlow ops of the C range coder (range_coder.h); tf_ops.py is the API.
//
// The ops are pure functions of their inputs: the decoder's state travels as an
// int64[5] tensor instead of tfc's variant handles, so they work inside
// tf.while_loop / tf.function, are saved in SavedModels like any stock op, and
// the graph may run or prune them freely.  Streams are byte-identical to tfc's
// (tfc.create_range_encoder + entropy_encode_index + entropy_encode_finalize),
// and unlike tfc's ops, decoding does bounded work per value on any stream and
// reports corrupt streams as InvalidArgument with one readable line.
//
// Each kernel keeps the last table it parsed (see TableCache).
//
// TflicCoreEncode / TflicCoreDecode run the whole entropy coding of a file (the
// integer entropy model and coding loop of entropy_core.h) in one call each;
// they keep the last model they parsed (see ModelCache).

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tensorflow/core/platform/mutex.h"
#include "tensorflow/core/platform/thread_annotations.h"

#include "entropy_core.h"
#include "range_coder.h"

namespace tflic {
namespace {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Status;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::TensorShapeUtils;
using ::tensorflow::tstring;
using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;
namespace errors = ::tensorflow::errors;

// Decoder state: the rc_decoder fields that change between calls.  The uint32
// fields are stored as non-negative int64s.
enum { kPos, kLow, kRangeM1, kCode, kStatus, kStateSize };

constexpr char kCorrupt[] = "corrupt tflic file: ";

// A lookup table parsed from a private copy of its entries.
class Table {
 public:
  Table() : table_{nullptr, nullptr, 0} {}
  ~Table() { rc_table_free(&table_); }
  Table(const Table&) = delete;
  Table& operator=(const Table&) = delete;

  // Copies and parses `tensor` (rank 1, or rank 2 with one row per matrix row,
  // as tfc accepts).
  Status Init(const Tensor& tensor, const std::string& what) {
    const int rank = tensor.dims();
    if (rank != 1 && rank != 2) {
      return errors::InvalidArgument(what, ": lookup table must be rank 1 or 2, got shape ",
                                     tensor.shape().DebugString());
    }
    shape_ = tensor.shape();
    const auto flat = tensor.flat<int32_t>();
    entries_.assign(flat.data(), flat.data() + flat.size());
    const size_t n = entries_.size();
    const size_t row_len = rank == 2 ? static_cast<size_t>(tensor.dim_size(1)) : 0;
    size_t bad = 0;
    int status;
    if (rank == 2 && tensor.dim_size(0) > 0 && row_len == 0) {
      status = RC_ERR_TABLE;  // Matrix rows without entries cannot hold a row.
    } else {
      status = rc_table_init(&table_, entries_.data(), n, row_len, &bad);
    }
    if (status == RC_ERR_TABLE) {
      return errors::InvalidArgument(what, ": malformed lookup table at entry ", bad,
                                     " (of ", n, ")");
    }
    if (status == RC_ERR_NOMEM) {
      return errors::ResourceExhausted(what, ": out of memory parsing the lookup table");
    }
    if (status != RC_OK) return errors::Internal(what, ": ", rc_status_string(status));
    return absl::OkStatus();
  }

  // Whether `tensor` holds exactly the entries this table was parsed from.
  bool Matches(const Tensor& tensor) const {
    return tensor.shape() == shape_ &&
           (entries_.empty() || std::memcmp(tensor.flat<int32_t>().data(), entries_.data(),
                                            entries_.size() * sizeof(int32_t)) == 0);
  }

  const rc_table* get() const { return &table_; }
  size_t rows() const { return table_.num_rows; }

 private:
  TensorShape shape_;
  std::vector<int32_t> entries_;
  rc_table table_;
};

// The last table a kernel parsed.  The codec calls each decode op a few hundred
// times per image with the same ~14k-entry table; comparing the entries with a
// copy is several times cheaper than parsing them again, and, unlike keying on
// the tensor's buffer, cannot be fooled by a buffer reused for other entries.
class TableCache {
 public:
  Status Get(const Tensor& tensor, const std::string& what,
             std::shared_ptr<const Table>* table) {
    {
      ::tensorflow::mutex_lock lock(mu_);
      *table = last_;
    }
    if (*table && (*table)->Matches(tensor)) return absl::OkStatus();
    auto parsed = std::make_shared<Table>();
    TF_RETURN_IF_ERROR(parsed->Init(tensor, what));
    *table = parsed;
    ::tensorflow::mutex_lock lock(mu_);
    last_ = std::move(parsed);
    return absl::OkStatus();
  }

 private:
  ::tensorflow::mutex mu_;
  std::shared_ptr<const Table> last_ TF_GUARDED_BY(mu_);
};

Status GetStream(const Tensor& tensor, const std::string& what, const tstring** stream) {
  if (!TensorShapeUtils::IsScalar(tensor.shape())) {
    return errors::InvalidArgument(what, ": stream must be a scalar string, got shape ",
                                   tensor.shape().DebugString());
  }
  *stream = &tensor.scalar<tstring>()();
  return absl::OkStatus();
}

// Rebuilds a decoder of `stream` from a state tensor.  The state comes from the
// graph, so it is checked for the invariants the decoder keeps (the code lies in
// the interval, which is at least 2^16 wide) rather than trusted.
Status LoadState(const Tensor& tensor, const tstring& stream, const std::string& what,
                 rc_decoder* dec) {
  bool ok = TensorShapeUtils::IsVector(tensor.shape()) && tensor.NumElements() == kStateSize;
  if (ok) {
    const auto s = tensor.vec<int64_t>();
    const int64_t u32 = 0xFFFFFFFFll;
    ok = s(kPos) >= 4 && s(kLow) >= 0 && s(kLow) <= u32 && s(kRangeM1) >= 0xFFFF &&
         s(kRangeM1) <= u32 && s(kCode) >= 0 && s(kCode) <= u32 &&
         (s(kStatus) == RC_OK || s(kStatus) == RC_ERR_ESCAPE || s(kStatus) == RC_ERR_PAST_END);
    if (ok) {
      // The fields are private to range_coder.c, but this file is part of the
      // same library: rc_decoder_init plus a state is exactly these fields.
      dec->data = reinterpret_cast<const unsigned char*>(stream.data());
      dec->size = stream.size();
      dec->pos = static_cast<size_t>(s(kPos));
      dec->low = static_cast<uint32_t>(s(kLow));
      dec->range_m1 = static_cast<uint32_t>(s(kRangeM1));
      dec->code = static_cast<uint32_t>(s(kCode));
      dec->status = static_cast<int>(s(kStatus));
      ok = dec->code - dec->low <= dec->range_m1;
    }
  }
  if (!ok) {
    return errors::InvalidArgument(what, ": invalid range decoder state (expected the int64[",
                                   kStateSize, "] of decoder_start or decode)");
  }
  return absl::OkStatus();
}

Status StoreState(OpKernelContext* context, int output, const rc_decoder& dec) {
  Tensor* tensor = nullptr;
  TF_RETURN_IF_ERROR(context->allocate_output(output, TensorShape({kStateSize}), &tensor));
  auto s = tensor->vec<int64_t>();
  s(kPos) = static_cast<int64_t>(dec.pos);
  s(kLow) = dec.low;
  s(kRangeM1) = dec.range_m1;
  s(kCode) = dec.code;
  s(kStatus) = dec.status;
  return absl::OkStatus();
}

Status ShapeIsStream(InferenceContext* c, int input) {
  ShapeHandle unused;
  return c->WithRank(c->input(input), 0, &unused);
}

Status ShapeIsTable(InferenceContext* c, int input) {
  ShapeHandle unused;
  TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(input), 1, &unused));
  return c->WithRankAtMost(c->input(input), 2, &unused);
}

Status ShapeIsState(InferenceContext* c, int input) {
  ShapeHandle shape;
  DimensionHandle unused;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(input), 1, &shape));
  return c->WithValue(c->Dim(shape, 0), kStateSize, &unused);
}

// ----------------------------------------------------------------- encode --

REGISTER_OP("TflicRangeEncode")
    .Input("indexes: int32")
    .Input("values: int32")
    .Input("table: int32")
    .Output("stream: string")
    .Attr("what: string = 'stream'")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle unused;
      TF_RETURN_IF_ERROR(c->Merge(c->input(0), c->input(1), &unused));
      TF_RETURN_IF_ERROR(ShapeIsTable(c, 2));
      c->set_output(0, c->Scalar());
      return absl::OkStatus();
    })
    .Doc(R"doc(
Range-codes `values` with table rows `indexes` (same shape, row-major order).

The stream is byte-identical to tfc.create_range_encoder([], table) +
tfc.entropy_encode_index(handle, indexes, values) + tfc.entropy_encode_finalize.
InvalidArgument, prefixed by `what`, for a malformed table, an index that is not
a row, or a value its row cannot code.
)doc");

class EncodeOp : public OpKernel {
 public:
  explicit EncodeOp(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("what", &what_));
  }

  void Compute(OpKernelContext* context) override {
    const Tensor& indexes = context->input(0);
    const Tensor& values = context->input(1);
    OP_REQUIRES(context, indexes.shape() == values.shape(),
                errors::InvalidArgument(what_, ": indexes shape ", indexes.shape().DebugString(),
                                        " != values shape ", values.shape().DebugString()));
    std::shared_ptr<const Table> table;
    OP_REQUIRES_OK(context, tables_.Get(context->input(2), what_, &table));
    Tensor* output = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, TensorShape({}), &output));
    tstring& stream = output->scalar<tstring>()();

    const int32_t* index = indexes.flat<int32_t>().data();
    const int32_t* value = values.flat<int32_t>().data();
    const int64_t n = indexes.NumElements();
    // Typical latents take well under a byte per value; the buffer doubles
    // when full (rc_encode is atomic, so the value is simply retried).
    size_t cap = static_cast<size_t>(n) / 4 + 64;
    stream.resize_uninitialized(cap);
    rc_encoder enc;
    rc_encoder_init(&enc, reinterpret_cast<unsigned char*>(stream.mdata()), cap);
    for (int64_t i = 0; i <= n; ++i) {
      int status;
      while ((status = i < n ? rc_encode(&enc, table->get(), index[i], value[i])
                             : rc_encoder_finish(&enc)) == RC_ERR_BUFFER_FULL) {
        cap *= 2;
        stream.resize_uninitialized(cap);
        rc_encoder_set_buffer(&enc, reinterpret_cast<unsigned char*>(stream.mdata()), cap);
      }
      if (status == RC_ERR_INDEX) {
        context->CtxFailure(errors::InvalidArgument(what_, ": table index ", index[i],
                                                    " at position ", i, " is not in [0, ",
                                                    table->rows(), ")"));
        return;
      }
      if (status == RC_ERR_VALUE) {
        context->CtxFailure(errors::InvalidArgument(
            what_, ": value ", value[i], " at position ", i, " cannot be coded with table row ",
            index[i], " (out of range, zero probability, or escape magnitude >= 2^",
            RC_MAX_ESCAPE_BITS, ")"));
        return;
      }
      OP_REQUIRES(context, status == RC_OK,
                  errors::Internal(what_, ": ", rc_status_string(status)));
    }
    const size_t length = rc_encoder_length(&enc);
    if (cap > length + length / 4 + 64) {
      // Give back the doubling's slack: streams can be large and long-lived.
      tstring exact(stream.data(), length);
      stream = std::move(exact);
    } else {
      stream.resize_uninitialized(length);
    }
  }

 private:
  std::string what_;
  TableCache tables_;
};

REGISTER_KERNEL_BUILDER(Name("TflicRangeEncode").Device(DEVICE_CPU), EncodeOp);

// ---------------------------------------------------------- decoder start --

REGISTER_OP("TflicRangeDecoderStart")
    .Input("stream: string")
    .Output("state: int64")
    .SetShapeFn([](InferenceContext* c) {
      TF_RETURN_IF_ERROR(ShapeIsStream(c, 0));
      c->set_output(0, c->Vector(kStateSize));
      return absl::OkStatus();
    })
    .Doc(R"doc(
Starts decoding `stream`: the decoder state, an int64[5] for TflicRangeDecode.
)doc");

class DecoderStartOp : public OpKernel {
 public:
  explicit DecoderStartOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const tstring* stream = nullptr;
    OP_REQUIRES_OK(context, GetStream(context->input(0), "range decoder", &stream));
    rc_decoder dec;
    rc_decoder_init(&dec, reinterpret_cast<const unsigned char*>(stream->data()),
                    stream->size());
    OP_REQUIRES_OK(context, StoreState(context, 0, dec));
  }
};

REGISTER_KERNEL_BUILDER(Name("TflicRangeDecoderStart").Device(DEVICE_CPU), DecoderStartOp);

// ----------------------------------------------------------------- decode --

REGISTER_OP("TflicRangeDecode")
    .Input("stream: string")
    .Input("state: int64")
    .Input("indexes: int32")
    .Input("table: int32")
    .Output("new_state: int64")
    .Output("values: int32")
    .Attr("what: string = 'stream'")
    .SetShapeFn([](InferenceContext* c) {
      TF_RETURN_IF_ERROR(ShapeIsStream(c, 0));
      TF_RETURN_IF_ERROR(ShapeIsState(c, 1));
      TF_RETURN_IF_ERROR(ShapeIsTable(c, 3));
      c->set_output(0, c->Vector(kStateSize));
      c->set_output(1, c->input(2));
      return absl::OkStatus();
    })
    .Doc(R"doc(
Decodes one value per entry of `indexes` (row-major) with those table rows.

Like tfc.entropy_decode_index; threading `state` through several calls equals
one call over all their indexes.  InvalidArgument, one line prefixed by `what`,
for a malformed table, an index that is not a row, or a corrupt stream.
)doc");

class DecodeOp : public OpKernel {
 public:
  explicit DecodeOp(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("what", &what_));
  }

  void Compute(OpKernelContext* context) override {
    const tstring* stream = nullptr;
    OP_REQUIRES_OK(context, GetStream(context->input(0), what_, &stream));
    rc_decoder dec;
    OP_REQUIRES_OK(context, LoadState(context->input(1), *stream, what_, &dec));
    const Tensor& indexes = context->input(2);
    std::shared_ptr<const Table> table;
    OP_REQUIRES_OK(context, tables_.Get(context->input(3), what_, &table));
    Tensor* values = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(1, indexes.shape(), &values));

    const int32_t* index = indexes.flat<int32_t>().data();
    int32_t* value = values->flat<int32_t>().data();
    const int64_t n = indexes.NumElements();
    for (int64_t i = 0; i < n; ++i) {
      const int status = rc_decode(&dec, table->get(), index[i], &value[i]);
      if (status != RC_OK) {
        context->CtxFailure(Error(status, i, n, index[i], table->rows(), stream->size()));
        return;
      }
    }
    OP_REQUIRES_OK(context, StoreState(context, 0, dec));
  }

 private:
  Status Error(int status, int64_t i, int64_t n, int32_t index, size_t rows,
               size_t size) const {
    switch (status) {
      case RC_ERR_INDEX:
        return errors::InvalidArgument(kCorrupt, what_, ": table index ", index,
                                       " at position ", i, " of ", n, " is not in [0, ", rows,
                                       ")");
      case RC_ERR_ESCAPE:
        return errors::InvalidArgument(kCorrupt, what_, ": overlong escape code at position ",
                                       i, " of ", n);
      case RC_ERR_PAST_END:
        return errors::InvalidArgument(kCorrupt, what_, ": truncated (position ", i, " of ",
                                       n, " needs data past its ", size, " bytes)");
      case RC_ERR_STATE:
        return errors::InvalidArgument(kCorrupt, what_,
                                       ": the decoder state records an earlier stream error");
      default:
        return errors::Internal(what_, ": ", rc_status_string(status));
    }
  }

  std::string what_;
  TableCache tables_;
};

REGISTER_KERNEL_BUILDER(Name("TflicRangeDecode").Device(DEVICE_CPU), DecodeOp);

// --------------------------------------------------------- decoder finish --

REGISTER_OP("TflicRangeDecoderFinish")
    .Input("stream: string")
    .Input("state: int64")
    .Output("consistent: bool")
    .SetShapeFn([](InferenceContext* c) {
      TF_RETURN_IF_ERROR(ShapeIsStream(c, 0));
      TF_RETURN_IF_ERROR(ShapeIsState(c, 1));
      c->set_output(0, c->Scalar());
      return absl::OkStatus();
    })
    .Doc(R"doc(
Whether the decoder consumed `stream` exactly, like tfc.entropy_decode_finalize:
false proves a mismatch, true is likely but no proof of success.
)doc");

class DecoderFinishOp : public OpKernel {
 public:
  explicit DecoderFinishOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const tstring* stream = nullptr;
    OP_REQUIRES_OK(context, GetStream(context->input(0), "range decoder", &stream));
    rc_decoder dec;
    OP_REQUIRES_OK(context, LoadState(context->input(1), *stream, "range decoder", &dec));
    int consistent = 0;
    rc_decoder_finish(&dec, &consistent);
    Tensor* output = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, TensorShape({}), &output));
    output->scalar<bool>()() = consistent != 0;
  }
};

REGISTER_KERNEL_BUILDER(Name("TflicRangeDecoderFinish").Device(DEVICE_CPU), DecoderFinishOp);


// ------------------------------------------------------------ entropy core --

// A model parsed by entropy_core.c from a private copy of its blob.
class CoreModel {
 public:
  ~CoreModel() { tec_model_free(model_); }

  Status Init(const tstring& blob) {
    blob_.assign(blob.data(), blob.size());
    char err[256] = "";
    model_ = tec_model_load(reinterpret_cast<const unsigned char*>(blob_.data()),
                            blob_.size(), err, sizeof err);
    if (!model_) return errors::InvalidArgument("entropy core: ", err);
    return absl::OkStatus();
  }

  bool Matches(const tstring& blob) const {
    return blob.size() == blob_.size() &&
           std::memcmp(blob.data(), blob_.data(), blob_.size()) == 0;
  }

  const tec_model* get() const { return model_; }

 private:
  std::string blob_;
  tec_model* model_ = nullptr;
};

// The last model a kernel parsed: the codec passes the same ~3 MB blob to
// every call; comparing it is far cheaper than parsing it again.
class ModelCache {
 public:
  Status Get(const Tensor& tensor, std::shared_ptr<const CoreModel>* model) {
    if (!TensorShapeUtils::IsScalar(tensor.shape())) {
      return errors::InvalidArgument("entropy core: model must be a scalar string");
    }
    const tstring& blob = tensor.scalar<tstring>()();
    {
      ::tensorflow::mutex_lock lock(mu_);
      *model = last_;
    }
    if (*model && (*model)->Matches(blob)) return absl::OkStatus();
    auto parsed = std::make_shared<CoreModel>();
    TF_RETURN_IF_ERROR(parsed->Init(blob));
    *model = parsed;
    ::tensorflow::mutex_lock lock(mu_);
    last_ = std::move(parsed);
    return absl::OkStatus();
  }

 private:
  ::tensorflow::mutex mu_;
  std::shared_ptr<const CoreModel> last_ TF_GUARDED_BY(mu_);
};

Status CoreStatus(int status, const char* err) {
  if (status == TEC_OK) return absl::OkStatus();
  if (status == TEC_ERR_NOMEM) return errors::ResourceExhausted("entropy core: out of memory");
  return errors::InvalidArgument(err);
}

REGISTER_OP("TflicCoreEncode")
    .Input("model: string")
    .Input("y: float32")
    .Input("z: float32")
    .Output("z_stream: string")
    .Output("y_stream: string")
    .Output("latent_check: int64")
    .Output("z_symbols: int32")
    .Output("y_hat: float64")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle y, z;
      TF_RETURN_IF_ERROR(ShapeIsStream(c, 0));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 4, &y));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 4, &z));
      c->set_output(0, c->Scalar());
      c->set_output(1, c->Scalar());
      c->set_output(2, c->Scalar());
      c->set_output(3, z);
      c->set_output(4, y);
      return absl::OkStatus();
    })
    .Doc(R"doc(
Entropy-codes an encoder's latents with the integer entropy model `model` (a blob of
tflic.codec.rangecoder.entropy_core.model_blob): y [1, h, w, M] (gained), z [1, hz, wz, C]
float32 -> the padded z and y streams, the latent check (uint64 bits), z's symbols
and the integer latent y_hat.
)doc");

class CoreEncodeOp : public OpKernel {
 public:
  explicit CoreEncodeOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    std::shared_ptr<const CoreModel> model;
    OP_REQUIRES_OK(context, models_.Get(context->input(0), &model));
    tec_info info;
    tec_model_info(model->get(), &info);
    const Tensor& y = context->input(1);
    const Tensor& z = context->input(2);
    OP_REQUIRES(context, y.dims() == 4 && y.dim_size(0) == 1 && y.dim_size(1) >= 1 &&
                y.dim_size(2) >= 1 && y.dim_size(1) <= 4096 && y.dim_size(2) <= 4096 &&
                y.dim_size(3) == info.latent_channels,
                errors::InvalidArgument("entropy core: y must be [1, h, w, ",
                                        info.latent_channels, "], got ",
                                        y.shape().DebugString()));
    const int h = static_cast<int>(y.dim_size(1)), w = static_cast<int>(y.dim_size(2));
    OP_REQUIRES(context, z.dims() == 4 && z.dim_size(0) == 1 && z.dim_size(1) == (h + 3) / 4 &&
                z.dim_size(2) == (w + 3) / 4 && z.dim_size(3) == info.hyper_channels,
                errors::InvalidArgument("entropy core: z must be [1, ", (h + 3) / 4, ", ",
                                        (w + 3) / 4, ", ", info.hyper_channels, "], got ",
                                        z.shape().DebugString()));
    Tensor *z_stream, *y_stream, *check, *z_symbols, *y_hat;
    OP_REQUIRES_OK(context, context->allocate_output(0, TensorShape({}), &z_stream));
    OP_REQUIRES_OK(context, context->allocate_output(1, TensorShape({}), &y_stream));
    OP_REQUIRES_OK(context, context->allocate_output(2, TensorShape({}), &check));
    OP_REQUIRES_OK(context, context->allocate_output(3, z.shape(), &z_symbols));
    OP_REQUIRES_OK(context, context->allocate_output(4, y.shape(), &y_hat));
    unsigned char *zs = nullptr, *ys = nullptr;
    size_t zn = 0, yn = 0;
    uint64_t value = 0;
    char err[256] = "";
    const int status = tec_encode(model->get(), h, w, y.flat<float>().data(),
                                  z.flat<float>().data(), &zs, &zn, &ys, &yn,
                                  z_symbols->flat<int32_t>().data(),
                                  y_hat->flat<double>().data(), &value, err, sizeof err);
    OP_REQUIRES_OK(context, CoreStatus(status, err));
    z_stream->scalar<tstring>()().assign(reinterpret_cast<const char*>(zs), zn);
    y_stream->scalar<tstring>()().assign(reinterpret_cast<const char*>(ys), yn);
    std::free(zs);
    std::free(ys);
    check->scalar<int64_t>()() = static_cast<int64_t>(value);
  }

 private:
  ModelCache models_;
};

REGISTER_KERNEL_BUILDER(Name("TflicCoreEncode").Device(DEVICE_CPU), CoreEncodeOp);

REGISTER_OP("TflicCoreDecode")
    .Input("model: string")
    .Input("z_stream: string")
    .Input("y_stream: string")
    .Input("height: int32")
    .Input("width: int32")
    .Input("latent_check: int64")
    .Attr("max_pixels: int = 0")
    .Attr("flip_step: int = -1")
    .Output("z_symbols: int32")
    .Output("y_hat: float64")
    .SetShapeFn([](InferenceContext* c) {
      for (int i = 0; i < 6; ++i) TF_RETURN_IF_ERROR(ShapeIsStream(c, i));
      c->set_output(0, c->UnknownShapeOfRank(4));
      c->set_output(1, c->UnknownShapeOfRank(4));
      return absl::OkStatus();
    })
    .Doc(R"doc(
Decodes a file's z and y streams for an image of height x width pixels with the
integer entropy model `model`: z's symbols [1, hz, wz, C] and the integer latent
y_hat [1, h, w, M], after checking them against `latent_check` and that both streams
end correctly. Sizes over max_pixels (0: no limit) or beyond what the streams can hold
fail before any allocation. flip_step >= 0 is a test hook: a drifted decoder.
)doc");

class CoreDecodeOp : public OpKernel {
 public:
  explicit CoreDecodeOp(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("max_pixels", &max_pixels_));
    OP_REQUIRES_OK(context, context->GetAttr("flip_step", &flip_step_));
  }

  void Compute(OpKernelContext* context) override {
    std::shared_ptr<const CoreModel> model;
    OP_REQUIRES_OK(context, models_.Get(context->input(0), &model));
    const tstring *z_stream = nullptr, *y_stream = nullptr;
    OP_REQUIRES_OK(context, GetStream(context->input(1), "z stream", &z_stream));
    OP_REQUIRES_OK(context, GetStream(context->input(2), "y stream", &y_stream));
    const int height = context->input(3).scalar<int32_t>()();
    const int width = context->input(4).scalar<int32_t>()();
    const uint64_t check = static_cast<uint64_t>(context->input(5).scalar<int64_t>()());
    const uint64_t max_pixels = max_pixels_ > 0 ? static_cast<uint64_t>(max_pixels_) : 0;
    tec_info info;
    tec_model_info(model->get(), &info);
    char err[256] = "";
    const auto* z_data = reinterpret_cast<const unsigned char*>(z_stream->data());
    const auto* y_data = reinterpret_cast<const unsigned char*>(y_stream->data());
    int h = 0, w = 0, hz = 0, wz = 0;
    const bool sized = height >= 1 && width >= 1 && height <= 65535 && width <= 65535;
    if (sized) tec_grids(height, width, &h, &w, &hz, &wz);
    // The limits first, from the sizes alone: nothing is allocated for a size the
    // file may not have (tec_decode says which limit failed).
    if (!sized || (max_pixels && static_cast<uint64_t>(height) * width > max_pixels) ||
        !tec_stream_holds(static_cast<uint64_t>(hz) * wz * info.hyper_channels,
                          z_stream->size(), info.z_cost_d, info.z_cost_p) ||
        !tec_stream_holds(static_cast<uint64_t>(h) * w * info.latent_channels,
                          y_stream->size(), info.y_cost_d, info.y_cost_p)) {
      const int status = tec_decode(model->get(), height, width, z_data, z_stream->size(),
                                    y_data, y_stream->size(), check, max_pixels, nullptr,
                                    nullptr, err, sizeof err);
      OP_REQUIRES_OK(context, CoreStatus(status == TEC_OK ? TEC_ERR_ARG : status, err));
      return;
    }
    Tensor *z_symbols = nullptr, *y_hat = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(
        0, TensorShape({1, hz, wz, info.hyper_channels}), &z_symbols));
    OP_REQUIRES_OK(context, context->allocate_output(
        1, TensorShape({1, h, w, info.latent_channels}), &y_hat));
    const int status = tec_decode_drifted(
        model->get(), height, width, z_data, z_stream->size(), y_data, y_stream->size(),
        check, max_pixels, static_cast<long>(flip_step_), z_symbols->flat<int32_t>().data(),
        y_hat->flat<double>().data(), err, sizeof err);
    OP_REQUIRES_OK(context, CoreStatus(status, err));
  }

 private:
  ::tensorflow::int64 max_pixels_ = 0;
  ::tensorflow::int64 flip_step_ = -1;
  ModelCache models_;
};

REGISTER_KERNEL_BUILDER(Name("TflicCoreDecode").Device(DEVICE_CPU), CoreDecodeOp);

}  // namespace
}  // namespace tflic
