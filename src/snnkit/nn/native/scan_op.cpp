// The CPU and Autograd kernels of the operators snnkit::lif_scan and snnkit::lif_scan_backward (schemas and fake
// kernels: snnkit/nn/functional.py), over the C kernels of lif_scan.c (the library build.py loaded and probed; its
// functions are handed over by snnkit_bind_kernels). The same arithmetic as snnkit.nn.functional._LIFScan on the
// kernels, with no Python between the caller and the kernels: from an eager layer or a compiled graph, a scan
// costs ~20 us of overhead instead of ~60 (forward with autograd; measured on the project's 2-core VM).
//
// Tensors are [T, B, ...] (x's first two axes swapped with batch_first). The kernels walk O x T x N elements
// (batch, steps, neurons); the layout rule (Plan below) is that of snnkit/nn/native/layout.py, and the
// outputs' strides are checked equal to it by the tests (tests/test_scan_speed_equivalence.py).
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <numeric>
#include <vector>

namespace {

using at::Tensor;

template <typename R>
using ForwardFn = int (*)(const R *, long, long, R *, R *, R *, long, long, long, long, long, const R *,
                          const R *, const R *, int, int, int, R, R);
template <typename R>
using BackwardFn = int (*)(const R *, const R *, const R *, const R *, R *, R *, long, long, long, long, long,
                           const R *, int, int);

struct Kernels {
  ForwardFn<float> forward_f32 = nullptr;
  ForwardFn<double> forward_f64 = nullptr;
  BackwardFn<float> backward_f32 = nullptr;
  BackwardFn<double> backward_f64 = nullptr;
} kernels;

// The outputs' storage, reused: the rule and the cap of snnkit/nn/native/buffers.py's BufferPool (why: there),
// for this operator's outputs. A buffer is handed out again once no tensor but the pool's uses its storage.
class BufferPool {
 public:
  int64_t max_bytes = 0;  // set by snnkit_bind_kernels ($SNNKIT_SCAN_POOL_MB); 0: no pooling

  Tensor empty(at::IntArrayRef shape, const at::TensorOptions &options) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto &buffers = by_key_[{shape.vec(), options.dtype().toScalarType()}];
    for (const Tensor &buf : buffers) {
      if (buf.storage().use_count() == 1) return buf.alias();
    }
    Tensor buf = at::empty(shape, options);
    const int64_t size = buf.nbytes();
    if (bytes_ + size > max_bytes) drop_free(bytes_ + size - max_bytes);
    if (bytes_ + size > max_bytes) return buf;
    buffers.push_back(buf);
    bytes_ += size;
    return buf.alias();
  }

 private:
  void drop_free(int64_t need) {
    for (auto &entry : by_key_) {
      auto &buffers = entry.second;
      for (auto it = buffers.begin(); it != buffers.end() && need > 0;) {
        if (it->storage().use_count() == 1) {
          need -= it->nbytes();
          bytes_ -= it->nbytes();
          it = buffers.erase(it);
        } else {
          ++it;
        }
      }
    }
  }

  std::mutex mutex_;
  std::map<std::pair<std::vector<int64_t>, at::ScalarType>, std::vector<Tensor>> by_key_;
  int64_t bytes_ = 0;
} pool;

// How the kernels walk x [T, B, ...] (layout.py's Plan): the neuron block one contiguous span in any dimension
// order; outputs keep that order, time outer when x stores it so, batch outer otherwise.
struct Plan {
  std::vector<int64_t> order;       // neuron dimensions (0-based after [T, B]) in memory order, outer first
  std::vector<int64_t> buf_shape;   // storage shape of an output, outer to inner
  std::vector<int64_t> to_logical;  // permutation of such a buffer into [T, B, ...]
  int64_t neurons = 1;
};

Plan make_plan(const Tensor &x) {
  TORCH_CHECK(x.dim() >= 2 && x.numel() > 0 &&
                  (x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble),
              "snnkit::lif_scan: x must be a non-empty float32/float64 [T, B, ...] tensor");
  const int64_t nd = x.dim() - 2;
  Plan p;
  p.order.resize(nd);
  std::iota(p.order.begin(), p.order.end(), 0);
  std::stable_sort(p.order.begin(), p.order.end(),
                   [&](int64_t a, int64_t b) { return x.stride(2 + a) > x.stride(2 + b); });
  int64_t expected = 1;
  for (auto it = p.order.rbegin(); it != p.order.rend(); ++it) {
    TORCH_CHECK(x.size(2 + *it) == 1 || x.stride(2 + *it) == expected,
                "snnkit::lif_scan: x's neurons of one step must be one contiguous block");
    expected *= x.size(2 + *it);
  }
  p.neurons = expected;
  std::vector<int64_t> mem =
      x.stride(0) > x.stride(1) ? std::vector<int64_t>{0, 1} : std::vector<int64_t>{1, 0};
  for (auto d : p.order) mem.push_back(2 + d);
  for (auto d : mem) p.buf_shape.push_back(x.size(d));
  p.to_logical.resize(mem.size());
  std::iota(p.to_logical.begin(), p.to_logical.end(), 0);
  std::sort(p.to_logical.begin(), p.to_logical.end(), [&](int64_t a, int64_t b) { return mem[a] < mem[b]; });
  return p;
}

Tensor empty_out(const Plan &p, const Tensor &like, bool summed = false) {
  auto shape = p.buf_shape;
  if (summed) shape[p.to_logical[0] == 0 ? 0 : 1] = 1;  // the time axis of the storage
  return pool.empty(shape, like.options()).permute(p.to_logical);
}

// beta, threshold, v_reset (or beta alone) as the kernels take them: all 0-dim, or all [N] in x's neuron memory
// order.
std::vector<Tensor> kernel_params(const Tensor &x, const Plan &p, std::initializer_list<Tensor> params) {
  std::vector<Tensor> out(params);
  bool scalar = std::all_of(out.begin(), out.end(), [](const Tensor &t) { return t.dim() == 0; });
  for (auto &t : out) {
    TORCH_CHECK(t.scalar_type() == x.scalar_type() && t.device() == x.device() && t.dim() <= x.dim() - 2,
                "snnkit::lif_scan: beta, threshold and v_reset must be x's dtype and device, at most per neuron");
    if (!scalar) {
      t = t.expand(x.sizes().slice(2)).permute(p.order).reshape({-1}).contiguous();
    }
  }
  return out;
}

Tensor time_first(const Tensor &x, bool batch_first, int64_t steps) {
  Tensor xt = batch_first ? x.transpose(0, 1) : x;
  if (steps > 0) {
    TORCH_CHECK(xt.size(0) == 1, "snnkit::lif_scan: steps repeats one step, but x has ", xt.size(0), " steps");
    auto shape = xt.sizes().vec();
    shape[0] = steps;
    xt = xt.expand(shape);
  }
  return xt;
}

Tensor swapped(const Tensor &t, bool batch_first) { return batch_first && t.defined() ? t.transpose(0, 1) : t; }

template <typename R>
void run_forward(ForwardFn<R> fn, const Tensor &xt, const Tensor &s, const Tensor &h, const Tensor &sg,
                 const std::vector<Tensor> &k, const Plan &p, bool subtract, int64_t code, double p1, double p2) {
  TORCH_CHECK(fn, "snnkit::lif_scan: the C kernels are not bound (snnkit.nn.native.build)");
  int failed = fn(xt.const_data_ptr<R>(), xt.stride(1), xt.stride(0), s.mutable_data_ptr<R>(),
                  h.defined() ? h.mutable_data_ptr<R>() : nullptr, sg.defined() ? sg.mutable_data_ptr<R>() : nullptr,
                  xt.size(1), xt.size(0), p.neurons, s.stride(1), s.stride(0), k[0].const_data_ptr<R>(),
                  k[1].const_data_ptr<R>(), k[2].const_data_ptr<R>(), k[0].dim() > 0, subtract, (int)code, (R)p1,
                  (R)p2);
  TORCH_CHECK(!failed, "snnkit::lif_scan: no memory for ", p.neurons, " neuron states");
}

// The caller's idea of these kernels (snnkit.nn.native.build.op_version: a checksum of this file) must be theirs.
void check_version(int64_t version) {
  TORCH_CHECK(version == SNNKIT_OP_VERSION, "snnkit::lif_scan: called for other kernels (version ", version,
              ", these are ", SNNKIT_OP_VERSION, "): a graph compiled against another snnkit; clear torch.compile's "
              "caches (torch._dynamo.reset(); the inductor cache directory)");
}

// (s, h, sg): spikes, pre-reset potentials and surrogate derivatives over the steps, in x's axis order; h and sg
// are empty tensors unless with_h / with_sg. The surrogate is (code, p1, p2) of snnkit.nn.surrogate.kernel_form.
std::tuple<Tensor, Tensor, Tensor> scan_cpu(const Tensor &x, const Tensor &beta, const Tensor &threshold,
                                            const Tensor &v_reset, bool subtract, int64_t code, double p1, double p2,
                                            bool with_h, bool with_sg, int64_t steps, bool batch_first,
                                            int64_t version) {
  check_version(version);
  TORCH_CHECK(code >= 0, "snnkit::lif_scan: surrogate code ", code, " is not one of the kernels'");
  Tensor xt = time_first(x, batch_first, steps);
  Plan p = make_plan(xt);
  auto k = kernel_params(xt, p, {beta, threshold, v_reset});
  Tensor s = empty_out(p, xt);
  Tensor h = with_h ? empty_out(p, xt) : Tensor();
  Tensor sg = with_sg ? empty_out(p, xt) : Tensor();
  if (xt.scalar_type() == at::kFloat)
    run_forward<float>(kernels.forward_f32, xt, s, h, sg, k, p, subtract, code, p1, p2);
  else
    run_forward<double>(kernels.forward_f64, xt, s, h, sg, k, p, subtract, code, p1, p2);
  // An output not asked for is an empty tensor of its own (outputs must not alias one another).
  return {swapped(s, batch_first), with_h ? swapped(h, batch_first) : x.new_empty({0}),
          with_sg ? swapped(sg, batch_first) : x.new_empty({0})};
}

// g stored like ref (a copy only when the strides differ, e.g. an expanded gradient).
Tensor like(const Tensor &g, const Tensor &ref) {
  if (!g.defined() || g.strides() == ref.strides()) return g;
  return at::empty_strided(ref.sizes(), ref.strides(), ref.options()).copy_(g);
}

template <typename R>
void run_backward(BackwardFn<R> fn, const Tensor &gs, const Tensor &gh, const Tensor &sg, const Tensor &s,
                  const Tensor &out, bool summed, const Tensor &beta_k, int64_t neurons, bool subtract) {
  TORCH_CHECK(fn, "snnkit::lif_scan_backward: the C kernels are not bound (snnkit.nn.native.build)");
  int failed = fn(gs.defined() ? gs.const_data_ptr<R>() : nullptr, gh.defined() ? gh.const_data_ptr<R>() : nullptr,
                  sg.const_data_ptr<R>(), s.const_data_ptr<R>(), summed ? nullptr : out.mutable_data_ptr<R>(),
                  summed ? out.mutable_data_ptr<R>() : nullptr, s.size(1), s.size(0), neurons, s.stride(1),
                  s.stride(0), beta_k.const_data_ptr<R>(), beta_k.dim() > 0, subtract);
  TORCH_CHECK(!failed, "snnkit::lif_scan_backward: no memory for ", neurons, " neuron states");
}

// dL/dh [T, B, ...] (time-first, stored like s) by the reverse recurrence
// dh[t] = grad_s[t] sg[t] + grad_h[t] + beta dh[t+1] (1 - s[t]) (no 1 - s for subtract); with summed its sum over
// the steps, [1, B, ...] (the gradient of a drive repeated over them).
Tensor backward_cpu(const std::optional<Tensor> &grad_s, const std::optional<Tensor> &grad_h, const Tensor &sg,
                    const Tensor &s, const Tensor &beta, bool subtract, bool summed, int64_t version) {
  check_version(version);
  Plan p = make_plan(s);
  Tensor out = empty_out(p, s, summed);
  auto k = kernel_params(s, p, {beta});
  Tensor gs = like(grad_s.value_or(Tensor()), s), gh = like(grad_h.value_or(Tensor()), s);
  if (s.scalar_type() == at::kFloat)
    run_backward<float>(kernels.backward_f32, gs, gh, like(sg, s), s, out, summed, k[0], p.neurons, subtract);
  else
    run_backward<double>(kernels.backward_f64, gs, gh, like(sg, s), s, out, summed, k[0], p.neurons, subtract);
  return out;
}

const c10::TypedOperatorHandle<decltype(scan_cpu)> &scan_op() {
  static auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("snnkit::lif_scan", "").typed<decltype(scan_cpu)>();
  return op;
}

// Autograd: gradients to x only (beta, threshold and v_reset are constants here; snnkit.nn.functional routes
// learnable ones to its own autograd.Function). The backward is itself an operator, so a compiled graph's
// backward is traced through it.
class ScanFunction : public torch::autograd::Function<ScanFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext *ctx, const Tensor &x,
                                                const Tensor &beta, const Tensor &threshold, const Tensor &v_reset,
                                                bool subtract, int64_t code, double p1, double p2, bool with_h,
                                                bool with_sg, int64_t steps, bool batch_first, int64_t version) {
    ctx->set_materialize_grads(false);  // no zero-filled [T, B, ...] gradient for the outputs nobody used
    at::AutoDispatchBelowADInplaceOrView below;
    auto [s, h, sg] =
        scan_op().call(x, beta, threshold, v_reset, subtract, code, p1, p2, with_h, with_sg, steps, batch_first,
                       version);
    ctx->save_for_backward({swapped(s, batch_first), with_sg ? swapped(sg, batch_first) : sg, beta});
    ctx->saved_data["subtract"] = subtract;
    ctx->saved_data["with_h"] = with_h;
    ctx->saved_data["steps"] = steps;
    ctx->saved_data["batch_first"] = batch_first;
    ctx->saved_data["version"] = version;
    ctx->mark_non_differentiable({sg});
    if (!with_h) ctx->mark_non_differentiable({h});
    return {s, h, sg};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext *ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const bool batch_first = ctx->saved_data["batch_first"].toBool();
    Tensor grad_s = swapped(grads[0], batch_first);
    Tensor grad_h = ctx->saved_data["with_h"].toBool() ? swapped(grads[1], batch_first) : Tensor();
    torch::autograd::variable_list out(13);
    if (!grad_s.defined() && !grad_h.defined()) return out;
    TORCH_CHECK(saved[1].dim() > 1, "snnkit::lif_scan: backward through a scan run without with_sg");
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("snnkit::lif_scan_backward", "")
                         .typed<decltype(backward_cpu)>();
    auto opt = [](const Tensor &t) { return t.defined() ? std::optional<Tensor>(t) : std::nullopt; };
    Tensor dh = op.call(opt(grad_s), opt(grad_h), saved[1], saved[0], saved[2], ctx->saved_data["subtract"].toBool(),
                        ctx->saved_data["steps"].toInt() > 0, ctx->saved_data["version"].toInt());
    out[0] = swapped(dh, batch_first);
    return out;
  }
};

std::tuple<Tensor, Tensor, Tensor> scan_autograd(const Tensor &x, const Tensor &beta, const Tensor &threshold,
                                                 const Tensor &v_reset, bool subtract, int64_t code, double p1,
                                                 double p2, bool with_h, bool with_sg, int64_t steps,
                                                 bool batch_first, int64_t version) {
  TORCH_CHECK(!at::GradMode::is_enabled() || !(beta.requires_grad() || threshold.requires_grad()),
              "snnkit::lif_scan: no gradient to beta or threshold here (snnkit.nn.functional.lif_scan takes "
              "learnable ones)");
  if (!(at::GradMode::is_enabled() && x.requires_grad())) {  // no node to record (Function::apply makes one anyway)
    at::AutoDispatchBelowADInplaceOrView below;
    return scan_op().call(x, beta, threshold, v_reset, subtract, code, p1, p2, with_h, with_sg, steps, batch_first,
                          version);
  }
  auto out = ScanFunction::apply(x, beta, threshold, v_reset, subtract, code, p1, p2, with_h, with_sg, steps,
                                 batch_first, version);
  return {out[0], out[1], out[2]};
}

}  // namespace

extern "C" void snnkit_bind_kernels(void *forward_f32, void *forward_f64, void *backward_f32, void *backward_f64,
                                    int64_t pool_bytes) {
  pool.max_bytes = pool_bytes;
  kernels.forward_f32 = reinterpret_cast<ForwardFn<float>>(forward_f32);
  kernels.forward_f64 = reinterpret_cast<ForwardFn<double>>(forward_f64);
  kernels.backward_f32 = reinterpret_cast<BackwardFn<float>>(backward_f32);
  kernels.backward_f64 = reinterpret_cast<BackwardFn<double>>(backward_f64);
}

TORCH_LIBRARY_IMPL(snnkit, CPU, m) {
  m.impl("lif_scan", &scan_cpu);
  m.impl("lif_scan_backward", &backward_cpu);
}

TORCH_LIBRARY_IMPL(snnkit, Autograd, m) { m.impl("lif_scan", &scan_autograd); }
