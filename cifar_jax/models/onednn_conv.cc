// oneDNN convolutions for XLA:CPU through the typed XLA FFI (model.conv_backend='onednn';
// cifar_jax/models/onednn_conv.py builds this file and registers its handlers).
//
// Three handlers, each a 2-D float32 convolution in cifar_jax's layouts (activations NHWC,
// kernels HWIO), any strides and explicit paddings, no dilation, no groups:
//
//   OnednnConvFwd         (x[N,H,W,C], w[KH,KW,C,O])    -> y[N,OH,OW,O]
//   OnednnConvBwdData     (dy[N,OH,OW,O], w[KH,KW,C,O]) -> dx[N,H,W,C]
//   OnednnConvBwdWeights  (x[N,H,W,C], dy[N,OH,OW,O])   -> dw[KH,KW,C,O]
//
// attributes stride_h, stride_w, pad_top, pad_bottom, pad_left, pad_right (int64).
//
// Activations stay NHWC (oneDNN's channels-last kernels read and write XLA's buffers in place);
// kernels are whatever layout oneDNN picks (format_tag::any), reordered from / to HWIO on each
// call, a small copy next to the convolution. Primitives are built once per shape and cached
// (building one JIT-compiles its kernel, milliseconds); each call runs on the calling XLA thread
// with a user scratchpad in a thread-local buffer, so concurrent calls of one primitive are safe.
// oneDNN's threads are its OpenMP runtime's: CIFAR_JAX_ONEDNN_THREADS per call (onednn_conv.py
// sets its default, every core, and says why).

#include <omp.h>

#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using tag = dnnl::memory::format_tag;

namespace {

dnnl::engine& Engine() {
  static dnnl::engine* engine = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *engine;
}

int Threads() {
  static int threads = [] {
    const char* value = std::getenv("CIFAR_JAX_ONEDNN_THREADS");
    int n = value ? std::atoi(value) : 1;
    return n > 0 ? n : 1;
  }();
  return threads;
}

// A grow-only 64-byte-aligned buffer per thread and slot (0: scratchpad, 1: kernel copy).
void* ThreadBuffer(int slot, size_t bytes) {
  struct Buffer {
    void* data = nullptr;
    size_t size = 0;
    ~Buffer() { std::free(data); }
  };
  thread_local Buffer buffers[2];
  Buffer& b = buffers[slot];
  if (bytes > b.size) {
    std::free(b.data);
    b.size = (bytes + 63) / 64 * 64;
    b.data = std::aligned_alloc(64, b.size);
  }
  return b.data;
}

struct Geometry {
  int64_t n, h, w, c, kh, kw, o, oh, ow;
  memory::dims strides, pad_l, pad_r;

  std::string Key(char kind) const {
    std::string key(1, kind);
    for (int64_t v : {n, h, w, c, kh, kw, o, oh, ow, strides[0], strides[1], pad_l[0], pad_l[1],
                      pad_r[0], pad_r[1]}) {
      key += ',' + std::to_string(v);
    }
    return key;
  }
  memory::desc Src() const { return memory::desc({n, c, h, w}, memory::data_type::f32, tag::nhwc); }
  memory::desc Dst() const {
    return memory::desc({n, o, oh, ow}, memory::data_type::f32, tag::nhwc);
  }
  memory::desc UserWeights() const {
    return memory::desc({o, c, kh, kw}, memory::data_type::f32, tag::hwio);
  }
  memory::desc AnyWeights() const {
    return memory::desc({o, c, kh, kw}, memory::data_type::f32, tag::any);
  }
};

dnnl::primitive_attr UserScratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

dnnl::convolution_forward::primitive_desc ForwardDesc(const Geometry& g) {
  return dnnl::convolution_forward::primitive_desc(
      Engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, g.Src(),
      g.AnyWeights(), g.Dst(), g.strides, g.pad_l, g.pad_r, UserScratchpad());
}

// One cached convolution: the primitive, its kernel layout and the HWIO <-> that reorder.
struct Entry {
  dnnl::primitive conv;
  memory::desc scratchpad;
  memory::desc weights;  // oneDNN's layout of the kernel (or its gradient).
  bool reorder = false;
  dnnl::reorder weights_reorder;
};

template <typename Build>
std::shared_ptr<Entry> Cached(const std::string& key, Build build) {
  static std::mutex mutex;
  static auto* cache = new std::unordered_map<std::string, std::shared_ptr<Entry>>();
  {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = cache->find(key);
    if (it != cache->end()) return it->second;
  }
  std::shared_ptr<Entry> entry = build();
  std::lock_guard<std::mutex> lock(mutex);
  return cache->emplace(key, entry).first->second;
}

template <typename PrimitiveDesc>
void SetWeights(Entry& e, const PrimitiveDesc& pd, const memory::desc& weights,
                const memory::desc& user, bool to_user) {
  e.scratchpad = pd.scratchpad_desc();
  e.weights = weights;
  e.reorder = weights != user;
  if (e.reorder) {
    e.weights_reorder = to_user ? dnnl::reorder(dnnl::reorder::primitive_desc(
                                      Engine(), weights, Engine(), user))
                                : dnnl::reorder(dnnl::reorder::primitive_desc(
                                      Engine(), user, Engine(), weights));
  }
}

// The kernel as the primitive reads it: XLA's HWIO buffer itself, or a copy in oneDNN's layout.
memory Kernel(const Entry& e, const Geometry& g, float* hwio, dnnl::stream& stream) {
  memory user(g.UserWeights(), Engine(), hwio);
  if (!e.reorder) return user;
  memory kernel(e.weights, Engine(), ThreadBuffer(1, e.weights.get_size()));
  e.weights_reorder.execute(stream, user, kernel);
  return kernel;
}

memory Scratchpad(const Entry& e) {
  return memory(e.scratchpad, Engine(), ThreadBuffer(0, e.scratchpad.get_size()));
}

ffi::Error Run(const char* what, const std::function<void()>& body) {
  try {
    omp_set_num_threads(Threads());
    body();
    return ffi::Error::Success();
  } catch (const dnnl::error& e) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string(what) + ": oneDNN: " + e.what());
  }
}

Geometry MakeGeometry(ffi::Span<const int64_t> x, ffi::Span<const int64_t> w,
                      ffi::Span<const int64_t> y, int64_t stride_h, int64_t stride_w,
                      int64_t pad_top, int64_t pad_bottom, int64_t pad_left, int64_t pad_right) {
  return Geometry{x[0], x[1], x[2], x[3], w[0], w[1], w[3], y[1], y[2],
                  {stride_h, stride_w}, {pad_top, pad_left}, {pad_bottom, pad_right}};
}

ffi::Error ConvFwd(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                   ffi::ResultBuffer<ffi::F32> y, int64_t stride_h, int64_t stride_w,
                   int64_t pad_top, int64_t pad_bottom, int64_t pad_left, int64_t pad_right) {
  return Run("onednn_conv_fwd", [&] {
    Geometry g = MakeGeometry(x.dimensions(), w.dimensions(), y->dimensions(), stride_h,
                              stride_w, pad_top, pad_bottom, pad_left, pad_right);
    auto e = Cached(g.Key('f'), [&] {
      auto entry = std::make_shared<Entry>();
      auto pd = ForwardDesc(g);
      entry->conv = dnnl::convolution_forward(pd);
      SetWeights(*entry, pd, pd.weights_desc(), g.UserWeights(), /*to_user=*/false);
      return entry;
    });
    dnnl::stream stream(Engine());
    memory conv_w = Kernel(*e, g, w.typed_data(), stream);
    e->conv.execute(stream, {{DNNL_ARG_SRC, memory(g.Src(), Engine(), x.typed_data())},
                             {DNNL_ARG_WEIGHTS, conv_w},
                             {DNNL_ARG_DST, memory(g.Dst(), Engine(), y->typed_data())},
                             {DNNL_ARG_SCRATCHPAD, Scratchpad(*e)}});
    stream.wait();
  });
}

ffi::Error ConvBwdData(ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> w,
                       ffi::ResultBuffer<ffi::F32> dx, int64_t stride_h, int64_t stride_w,
                       int64_t pad_top, int64_t pad_bottom, int64_t pad_left, int64_t pad_right) {
  return Run("onednn_conv_bwd_data", [&] {
    Geometry g = MakeGeometry(dx->dimensions(), w.dimensions(), dy.dimensions(), stride_h,
                              stride_w, pad_top, pad_bottom, pad_left, pad_right);
    auto e = Cached(g.Key('d'), [&] {
      auto entry = std::make_shared<Entry>();
      auto pd = dnnl::convolution_backward_data::primitive_desc(
          Engine(), dnnl::algorithm::convolution_direct, g.Src(), g.AnyWeights(), g.Dst(),
          g.strides, g.pad_l, g.pad_r, ForwardDesc(g), UserScratchpad());
      entry->conv = dnnl::convolution_backward_data(pd);
      SetWeights(*entry, pd, pd.weights_desc(), g.UserWeights(), /*to_user=*/false);
      return entry;
    });
    dnnl::stream stream(Engine());
    memory conv_w = Kernel(*e, g, w.typed_data(), stream);
    e->conv.execute(stream, {{DNNL_ARG_DIFF_DST, memory(g.Dst(), Engine(), dy.typed_data())},
                             {DNNL_ARG_WEIGHTS, conv_w},
                             {DNNL_ARG_DIFF_SRC, memory(g.Src(), Engine(), dx->typed_data())},
                             {DNNL_ARG_SCRATCHPAD, Scratchpad(*e)}});
    stream.wait();
  });
}

ffi::Error ConvBwdWeights(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                          ffi::ResultBuffer<ffi::F32> dw, int64_t stride_h, int64_t stride_w,
                          int64_t pad_top, int64_t pad_bottom, int64_t pad_left,
                          int64_t pad_right) {
  return Run("onednn_conv_bwd_weights", [&] {
    Geometry g = MakeGeometry(x.dimensions(), dw->dimensions(), dy.dimensions(), stride_h,
                              stride_w, pad_top, pad_bottom, pad_left, pad_right);
    auto e = Cached(g.Key('w'), [&] {
      auto entry = std::make_shared<Entry>();
      auto pd = dnnl::convolution_backward_weights::primitive_desc(
          Engine(), dnnl::algorithm::convolution_direct, g.Src(), g.AnyWeights(), g.Dst(),
          g.strides, g.pad_l, g.pad_r, ForwardDesc(g), UserScratchpad());
      entry->conv = dnnl::convolution_backward_weights(pd);
      SetWeights(*entry, pd, pd.diff_weights_desc(), g.UserWeights(), /*to_user=*/true);
      return entry;
    });
    dnnl::stream stream(Engine());
    memory user_dw(g.UserWeights(), Engine(), dw->typed_data());
    memory conv_dw = e->reorder
        ? memory(e->weights, Engine(), ThreadBuffer(1, e->weights.get_size())) : user_dw;
    e->conv.execute(stream, {{DNNL_ARG_SRC, memory(g.Src(), Engine(), x.typed_data())},
                             {DNNL_ARG_DIFF_DST, memory(g.Dst(), Engine(), dy.typed_data())},
                             {DNNL_ARG_DIFF_WEIGHTS, conv_dw},
                             {DNNL_ARG_SCRATCHPAD, Scratchpad(*e)}});
    if (e->reorder) e->weights_reorder.execute(stream, conv_dw, user_dw);
    stream.wait();
  });
}

}  // namespace

#define CONV_ATTRS                                                                  \
  .Attr<int64_t>("stride_h").Attr<int64_t>("stride_w").Attr<int64_t>("pad_top")   \
      .Attr<int64_t>("pad_bottom").Attr<int64_t>("pad_left").Attr<int64_t>("pad_right")

XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvFwd, ConvFwd,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>() CONV_ATTRS);
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvBwdData, ConvBwdData,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>() CONV_ATTRS);
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvBwdWeights, ConvBwdWeights,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>() CONV_ATTRS);

// The oneDNN version the library runs with, for a run's record.
extern "C" const char* OnednnConvVersion() {
  static std::string text = [] {
    const dnnl_version_t* v = dnnl_version();
    return std::to_string(v->major) + "." + std::to_string(v->minor) + "." +
           std::to_string(v->patch) + " (" + v->hash + ")";
  }();
  return text.c_str();
}

// The oneDNN implementation (e.g. "brg_conv_fwd:avx512_core") that a convolution of this
// geometry gets: kind 'f' forward, 'd' input gradient, 'w' weight gradient.
extern "C" const char* OnednnConvImplInfo(char kind, int64_t n, int64_t h, int64_t w, int64_t c,
                                          int64_t kh, int64_t kw, int64_t o, int64_t stride_h,
                                          int64_t stride_w, int64_t pad_top, int64_t pad_bottom,
                                          int64_t pad_left, int64_t pad_right) {
  thread_local std::string text;
  try {
    int64_t oh = (h + pad_top + pad_bottom - kh) / stride_h + 1;
    int64_t ow = (w + pad_left + pad_right - kw) / stride_w + 1;
    Geometry g{n, h, w, c, kh, kw, o, oh, ow,
               {stride_h, stride_w}, {pad_top, pad_left}, {pad_bottom, pad_right}};
    auto fwd = ForwardDesc(g);
    if (kind == 'd') {
      text = dnnl::convolution_backward_data::primitive_desc(
          Engine(), dnnl::algorithm::convolution_direct, g.Src(), g.AnyWeights(), g.Dst(),
          g.strides, g.pad_l, g.pad_r, fwd, UserScratchpad()).impl_info_str();
    } else if (kind == 'w') {
      text = dnnl::convolution_backward_weights::primitive_desc(
          Engine(), dnnl::algorithm::convolution_direct, g.Src(), g.AnyWeights(), g.Dst(),
          g.strides, g.pad_l, g.pad_r, fwd, UserScratchpad()).impl_info_str();
    } else {
      text = fwd.impl_info_str();
    }
  } catch (const dnnl::error& e) {
    text = std::string("error: ") + e.what();
  }
  return text.c_str();
}
