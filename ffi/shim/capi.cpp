// The C ABI of distrinews.h: argument checks, one training step, inference, weights in and out.
// Every entry point runs its body through guarded(), which turns every C++ exception into a status code
// and a message; nothing thrown here can reach Deno.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>
#include <c10/core/DeviceGuard.h>
#include <c10/util/Exception.h>
#include <torch/cuda.h>
#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/export.h>
#include <torch/csrc/jit/serialization/pickler.h>
#include <torch/utils.h>
#include <torch/version.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "distilbert.h"
#include "distrinews.h"
#include "guard.h"
#include "torch_thread.h"
#include "handles.h"
#include "optim.h"

using distrinews::checked;
using distrinews::DistilBertForSequenceClassification;
using distrinews::entry_point;
using distrinews::guarded;
using distrinews::InvalidArgument;
using distrinews::IoError;
using distrinews::require;
using distrinews::with_model;

namespace {

// Serialises training steps across models while one of them owns the default generator's state.
std::mutex g_rng_mutex;

int64_t copy_string(const std::string& s, char* buf, int64_t cap) { return distrinews::copy_string(s, buf, cap); }

void check_config(const dn_config& c) {
  require(c.vocab_size > 0 && c.max_position_embeddings > 0 && c.dim > 0 && c.n_layers > 0 && c.n_heads > 0 &&
              c.hidden_dim > 0,
          "config sizes must be positive");
  // One label would make Hugging Face train a regression (MSE); this model is a classifier.
  require(c.num_labels >= 2, "a classifier needs at least 2 labels, got ", c.num_labels);
  require(c.dim % c.n_heads == 0, "config.n_heads (", c.n_heads, ") must divide config.dim (", c.dim, ")");
  require(c.pad_token_id >= 0 && c.pad_token_id < c.vocab_size, "config.pad_token_id must be in [0, vocab_size)");
  for (double p : {c.dropout, c.attention_dropout, c.seq_classif_dropout})
    require(p >= 0.0 && p < 1.0, "dropout probabilities must be in [0, 1)");
  require(c.initializer_range > 0.0, "config.initializer_range must be positive");
}

// Copies a batch out of JS memory onto the model's device, checking every value the model would index
// with. (An out-of-range id on a GPU is a device-side assert that poisons the CUDA context, so it must be
// caught here, before any kernel runs.)
std::pair<torch::Tensor, torch::Tensor> load_inputs(const dn_model& m, const int32_t* ids, const uint8_t* mask,
                                                    int64_t batch, int64_t seq) {
  require(ids && mask, "input_ids and attention_mask must not be null");
  require(batch > 0 && seq > 0, "batch and sequence length must be positive (got ", batch, " x ", seq, ")");
  require(seq <= m.config.max_position_embeddings, "sequence length ", seq,
          " exceeds max_position_embeddings ", m.config.max_position_embeddings);
  auto ids_cpu = torch::from_blob(const_cast<int32_t*>(ids), {batch, seq}, torch::kInt32);
  auto mask_cpu = torch::from_blob(const_cast<uint8_t*>(mask), {batch, seq}, torch::kUInt8);
  const auto lo = ids_cpu.min().item<int32_t>(), hi = ids_cpu.max().item<int32_t>();
  require(lo >= 0 && hi < m.config.vocab_size, "token ids must be in [0, ", m.config.vocab_size, "), got range [",
          lo, ", ", hi, "]");
  require(mask_cpu.max().item<uint8_t>() <= 1, "attention_mask values must be 0 or 1");
  // Every sequence needs at least one visible key, or its attention row is all -inf (NaN softmax).
  require(mask_cpu.amax(1).min().item<uint8_t>() == 1, "every sequence needs at least one unmasked token");
  // A batch without padding needs no mask at all, which lets attention take its faster unmasked kernels.
  const bool no_padding = mask_cpu.min().item<uint8_t>() == 1;
  return {ids_cpu.to(m.device, torch::kLong), no_padding ? torch::Tensor() : mask_cpu.to(m.device, torch::kBool)};
}

// bf16 autocast for the duration of a forward pass, on the model's device type (CUDA, or the CPU, where
// oneDNN runs bf16 matrix products on AMX/AVX-512-BF16 units). Autocast state is
// thread-local, and nonblocking FFI calls run on Deno's worker threads, so it is switched on and off inside
// every call that wants it.
struct AutocastScope {
  bool active;
  c10::DeviceType type;
  AutocastScope(bool enable, c10::DeviceType device_type) : active(enable), type(device_type) {
    if (!active) return;
    at::autocast::set_autocast_dtype(type, at::kBFloat16);
    at::autocast::set_autocast_enabled(type, true);
    at::autocast::increment_nesting();
  }
  ~AutocastScope() {
    if (!active) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(type, false);
  }
};

// Whether a call asked for bf16 autocast. Parameters, gradients and AdamW stay fp32 either way (autocast
// casts copies for the matrix products); whether bf16 pays on a given CPU is the caller's decision.
bool use_bf16(int32_t flags) { return (flags & DN_BF16) != 0; }

// The unpadded path needs each row's [CLS] (position 0) to be a real token, as with right padding;
// left-padded batches take the padded forward.
bool packable(const torch::Tensor& real) { return real.select(1, 0).all().item<bool>(); }

void configure_optimizer(dn_model& m, double weight_decay, double beta1, double beta2, double eps) {
  require(weight_decay >= 0.0, "weight_decay must be >= 0");
  require(beta1 >= 0.0 && beta1 < 1.0 && beta2 >= 0.0 && beta2 < 1.0, "AdamW betas must be in [0, 1)");
  require(eps > 0.0, "AdamW eps must be > 0");
  // Hugging Face's Trainer decays weight matrices only: biases and LayerNorm weights keep their scale.
  std::vector<distrinews::AdamW::Group> groups(2);
  groups[0].weight_decay = weight_decay;
  for (auto& [name, p] : m.params) {
    const bool is_norm = name.find("LayerNorm") != std::string::npos || name.find("layer_norm") != std::string::npos;
    const bool is_bias = name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
    auto& g = groups[is_norm || is_bias ? 1 : 0];
    g.params.push_back(p);
  }
  for (auto& g : groups) {
    g.exp_avgs.resize(g.params.size());
    g.exp_avg_sqs.resize(g.params.size());
    g.steps.resize(g.params.size());
  }
  m.optimizer = std::make_unique<distrinews::AdamW>(std::move(groups), beta1, beta2, eps);
}

const torch::Tensor& param_at(dn_model& m, int64_t i) {
  require(i >= 0 && i < static_cast<int64_t>(m.params.size()), "parameter index ", i, " out of range");
  return m.params[static_cast<size_t>(i)].second;
}

}  // namespace

namespace {

// One entry of the training state: a name and the tensor it lives in (optimizer slots or the RNG state).
struct StateEntry {
  std::string name;
  at::Tensor* tensor;
};

std::vector<StateEntry> train_state(dn_model& m) {
  std::vector<StateEntry> entries;
  for (auto& [name, p] : m.params) {
    auto slots = m.optimizer->slots_for(p);
    entries.push_back({"optimizer.exp_avg." + name, slots.exp_avg});
    entries.push_back({"optimizer.exp_avg_sq." + name, slots.exp_avg_sq});
    entries.push_back({"optimizer.step." + name, slots.step});
  }
  entries.push_back({"rng_state", &m.rng_state});
  return entries;
}

StateEntry state_at(dn_model& m, int64_t i) {
  auto entries = train_state(m);
  require(i >= 0 && i < static_cast<int64_t>(entries.size()), "training state index ", i, " out of range");
  return entries[static_cast<size_t>(i)];
}

int64_t byte_size(const at::Tensor& t) { return t.numel() * static_cast<int64_t>(t.element_size()); }

}  // namespace

extern "C" {

int32_t dn_abi_version(void) { return DN_ABI_VERSION; }

int64_t dn_last_error(dn_model* model, char* buf, int64_t cap) {
  return copy_string(distrinews::read_error(errors_of(model)), buf, cap);
}

int64_t dn_torch_version(char* buf, int64_t cap) { return copy_string(TORCH_VERSION, buf, cap); }

int32_t dn_set_num_threads(int32_t intra, int32_t interop) {
  return entry_point(nullptr, [&] {
    require(intra > 0, "thread count must be positive");
    at::set_num_threads(intra);
    // Inter-op threads can only be set before the pool starts; libtorch throws otherwise.
    if (interop > 0) at::set_num_interop_threads(interop);
  });
}

// Asked on the torch thread: the OpenMP thread count is a per-thread setting.
int32_t dn_get_num_threads(void) {
  return distrinews::TorchThread::run([] { return static_cast<int32_t>(at::get_num_threads()); });
}

int32_t dn_cuda_device_count(void) {
  int32_t count = 0;
  guarded(nullptr, [&] { count = static_cast<int32_t>(torch::cuda::device_count()); });
  return count;
}

int32_t dn_manual_seed(uint64_t seed) {
  return entry_point(nullptr, [&] {
    std::lock_guard<std::mutex> rng_lock(g_rng_mutex);
    torch::manual_seed(seed);
  });
}

int32_t dn_randperm(int64_t n, uint64_t seed, int64_t* out) {
  return entry_point(nullptr, [&] {
    require(n >= 0, "randperm size must be >= 0, got ", n);
    require(out || n == 0, "out must not be null");
    // A private generator, as DistributedSampler makes one per epoch: the global stream is untouched.
    auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
    auto perm = at::randperm(n, generator, torch::kLong);
    std::memcpy(out, perm.data_ptr<int64_t>(), static_cast<size_t>(n) * sizeof(int64_t));
  });
}

int32_t dn_clock_ns(int64_t* out) {
  return entry_point(nullptr, [&] {
    require(out, "out must not be null");
    *out = distrinews::monotonic_ns();
  });
}

int32_t dn_trim_host_memory(int32_t* released) {
  return entry_point(nullptr, [&] {
    require(released, "released must not be null");
    *released = 0;
#if defined(__GLIBC__)
    // glibc keeps freed chunks in its arenas for reuse. A training step frees about as much as it allocates,
    // but the next batch's tensors (other lengths, other sizes) fit the freed chunks badly, so the arenas
    // grow step after step. Trimming returns their free pages; the next steps fault back in what they touch.
    *released = malloc_trim(0);
#endif
  });
}

int32_t dn_model_create(const dn_config* config, int32_t device_index, uint64_t seed, dn_model** out) {
  return entry_point(nullptr, [&] {
    require(config && out, "config and out must not be null");
    *out = nullptr;
    check_config(*config);
    torch::Device device = torch::kCPU;
    if (device_index >= 0) {
      const auto count = static_cast<int32_t>(torch::cuda::device_count());
      require(device_index < count, "cuda:", device_index, " requested but ", count, " CUDA device(s) visible");
      device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(device_index));
    }
    c10::DeviceGuard guard(device);
    // Seeding and initialising must not interleave with a step that has its own stream swapped in.
    std::lock_guard<std::mutex> rng_lock(g_rng_mutex);
    torch::manual_seed(seed);
    auto net = DistilBertForSequenceClassification(*config);
    net->init_weights(config->initializer_range, config->pad_token_id);
    net->to(device);
    auto model = std::make_unique<dn_model>(*config, device, net);
    // Dropout continues the stream that initialised the weights, as it does in Python after manual_seed.
    model->rng_state = at::globalContext().defaultGenerator(device).get_state();
    for (auto& item : net->named_parameters()) model->params.emplace_back(item.key(), item.value());
    // Hugging Face TrainingArguments defaults.
    configure_optimizer(*model, 0.0, 0.9, 0.999, 1e-8);
    *out = model.release();
  });
}

void dn_model_free(dn_model* model) {
  // Deleting must not throw across the ABI either.
  try {
    delete model;
  } catch (...) {
  }
}

int32_t dn_model_param_count(dn_model* model, int64_t* out) {
  return with_model(model, [&](dn_model& m) {
    require(out, "out must not be null");
    *out = static_cast<int64_t>(m.params.size());
  });
}

int32_t dn_model_param_info(dn_model* model, int64_t i, char* name, int64_t name_cap, int64_t* shape,
                            int32_t* ndim) {
  return with_model(model, [&](dn_model& m) {
    require(shape && ndim, "shape and ndim must not be null");
    const auto& p = param_at(m, i);
    require(p.dim() <= DN_MAX_NDIM, "parameter has too many dimensions");
    copy_string(m.params[static_cast<size_t>(i)].first, name, name_cap);
    *ndim = static_cast<int32_t>(p.dim());
    for (int64_t d = 0; d < p.dim(); ++d) shape[d] = p.size(d);
  });
}

int32_t dn_model_param_read(dn_model* model, int64_t i, float* out, int64_t numel) {
  return with_model(model, [&](dn_model& m) {
    const auto& p = param_at(m, i);
    require(out && numel == p.numel(), "output buffer must hold ", p.numel(), " floats, got ", numel);
    auto host = p.detach().to(torch::kCPU, torch::kFloat).contiguous();
    std::memcpy(out, host.data_ptr<float>(), static_cast<size_t>(numel) * sizeof(float));
  });
}

int32_t dn_model_param_write(dn_model* model, int64_t i, int32_t dtype, const void* data, int64_t nbytes) {
  return with_model(model, [&](dn_model& m) {
    const auto& p = param_at(m, i);
    torch::ScalarType type;
    switch (dtype) {
      case DN_DTYPE_F32: type = torch::kFloat; break;
      case DN_DTYPE_F16: type = torch::kHalf; break;
      case DN_DTYPE_BF16: type = torch::kBFloat16; break;
      case DN_DTYPE_F64: type = torch::kDouble; break;
      default: throw InvalidArgument(c10::str("unsupported dtype code ", dtype));
    }
    const auto expected = p.numel() * static_cast<int64_t>(c10::elementSize(type));
    require(data && nbytes == expected, m.params[static_cast<size_t>(i)].first, ": expected ", expected,
            " bytes, got ", nbytes);
    auto src = torch::from_blob(const_cast<void*>(data), p.sizes(), type);
    torch::NoGradGuard no_grad;
    // copy_ converts dtype and moves to the device; from_blob never outlives this call.
    const_cast<torch::Tensor&>(p).copy_(src);
  });
}

int32_t dn_model_save_pt(dn_model* model, const char* path) {
  return with_model(model, [&](dn_model& m) {
    require(path && *path, "path must not be empty");
    // A plain dict of CPU tensors: what a state_dict is and what torch.load(weights_only=True) accepts.
    c10::impl::GenericDict state(c10::StringType::get(), c10::TensorType::get());
    for (auto& [name, p] : m.params) state.insert(name, p.detach().to(torch::kCPU).contiguous());
    // torch::pickle_save would tag the dict with torch.jit._pickle.restore_type_tag, a global that
    // Python's weights_only unpickler refuses; a Pickler without aggregate tags writes what torch.save does.
    std::vector<char> pickled;
    torch::jit::Pickler pickler([&](const char* bytes, size_t n) { pickled.insert(pickled.end(), bytes, bytes + n); },
                                nullptr, nullptr, nullptr, nullptr, /*tag_aggregates=*/false);
    pickler.protocol();
    pickler.pushIValue(state);
    pickler.stop();
    // The zip is assembled in memory and only then written: PyTorchStreamWriter's destructor finishes the
    // archive and may throw, which during unwinding from a failed file write would call std::terminate.
    std::vector<char> archive;
    {
      caffe2::serialize::PyTorchStreamWriter writer([&](const void* data, size_t size) -> size_t {
        const auto* bytes = static_cast<const char*>(data);
        archive.insert(archive.end(), bytes, bytes + size);
        return size;
      });
      // data.pkl plus one data/<key> record per storage: torch.save's zip layout.
      torch::jit::writeArchiveAndTensors("data", pickled.data(), pickled.size(), pickler.tensorData(), writer);
      writer.writeEndOfFile();
    }
    std::ofstream file(path, std::ios::binary | std::ios::trunc);
    if (!file) throw IoError(c10::str("cannot open ", path, " for writing"));
    file.write(archive.data(), static_cast<std::streamsize>(archive.size()));
    file.flush();
    if (!file) throw IoError(c10::str("failed writing ", path));
  });
}


int32_t dn_train_state_count(dn_model* model, int64_t* out) {
  return with_model(model, [&](dn_model& m) {
    require(out, "out must not be null");
    *out = static_cast<int64_t>(train_state(m).size());
  });
}

int32_t dn_train_state_info(dn_model* model, int64_t i, char* name, int64_t name_cap, int64_t* shape,
                            int32_t* ndim, int32_t* dtype) {
  return with_model(model, [&](dn_model& m) {
    require(shape && ndim && dtype, "shape, ndim and dtype must not be null");
    auto entry = state_at(m, i);
    const auto& t = *entry.tensor;
    require(t.dim() <= DN_MAX_NDIM, "state tensor has too many dimensions");
    copy_string(entry.name, name, name_cap);
    *ndim = static_cast<int32_t>(t.dim());
    for (int64_t d = 0; d < t.dim(); ++d) shape[d] = t.size(d);
    *dtype = t.scalar_type() == torch::kByte ? DN_DTYPE_U8 : DN_DTYPE_F32;
  });
}

int32_t dn_train_state_read(dn_model* model, int64_t i, void* out, int64_t nbytes) {
  return with_model(model, [&](dn_model& m) {
    auto entry = state_at(m, i);
    auto host = entry.tensor->detach().to(torch::kCPU).contiguous();
    require(out && nbytes == byte_size(host), entry.name, ": buffer must hold ", byte_size(host), " bytes");
    std::memcpy(out, host.data_ptr(), static_cast<size_t>(nbytes));
  });
}

int32_t dn_train_state_write(dn_model* model, int64_t i, const void* data, int64_t nbytes) {
  return with_model(model, [&](dn_model& m) {
    auto entry = state_at(m, i);
    auto& t = *entry.tensor;
    require(data && nbytes == byte_size(t), entry.name, ": expected ", byte_size(t), " bytes, got ", nbytes);
    auto src = torch::from_blob(const_cast<void*>(data), t.sizes(), t.scalar_type());
    c10::NoGradGuard no_grad;
    if (entry.tensor == &m.rng_state) {
      t = src.clone();  // a generator state is replaced whole, on the CPU where generators keep it
    } else {
      t.copy_(src);
    }
  });
}

int32_t dn_optimizer_configure(dn_model* model, double weight_decay, double beta1, double beta2, double eps) {
  return with_model(model, [&](dn_model& m) {
    configure_optimizer(m, weight_decay, beta1, beta2, eps);
  });
}

int32_t dn_train_step(dn_model* model, const int32_t* input_ids, const uint8_t* attention_mask,
                      const int32_t* labels, int64_t batch, int64_t seq, double lr, double max_grad_norm,
                      double loss_scale, int32_t flags, dn_step_result* out) {
  return with_model(model, [&](dn_model& m) {
    using distrinews::monotonic_ns;
    const int64_t t_start = monotonic_ns();
    require(labels && out, "labels and out must not be null");
    require(lr >= 0.0, "learning rate must be >= 0");
    c10::DeviceGuard device_guard(m.device);
    auto [ids, mask] = load_inputs(m, input_ids, attention_mask, batch, seq);
    auto labels_cpu = torch::from_blob(const_cast<int32_t*>(labels), {batch}, torch::kInt32);
    const auto lo = labels_cpu.min().item<int32_t>(), hi = labels_cpu.max().item<int32_t>();
    require(lo >= 0 && hi < m.config.num_labels, "labels must be in [0, ", m.config.num_labels, "), got range [",
            lo, ", ", hi, "]");
    auto target = labels_cpu.to(m.device, torch::kLong);

    std::lock_guard<std::mutex> rng_lock(g_rng_mutex);
    auto generator = at::globalContext().defaultGenerator(m.device);
    generator.set_state(m.rng_state);
    // Under DDP, gradients are synchronised on the step that applies the optimizer; accumulation
    // micro-steps keep theirs local, as DistributedDataParallel.no_sync() does.
    const bool sync = (flags & DN_STEP_APPLY) != 0;
    if (m.reducer) {
      // What DistributedDataParallel.forward does before running the module.
      if (sync) m.reducer->prepare_for_forward();
      m.reducer->rebuild_buckets();
    }
    m.net->train();
    const int64_t t_forward = monotonic_ns();
    torch::Tensor logits;
    {
      AutocastScope autocast(use_bf16(flags), m.device.type());
      // As in inference, matrix products run on the real tokens only and the last layer on [CLS] only;
      // autograd carries the gradients back through the gathers and scatters. Same loss and gradients as
      // the padded forward (within float rounding), less work the more a batch is padded.
      const auto real = mask.defined() ? mask : torch::ones_like(ids, torch::kBool);
      logits = !(flags & DN_PADDED) && packable(real) ? m.net->forward_packed(ids, real) : m.net->forward(ids, mask);
    }
    // ...and after it: arm the Reducer's autograd hooks, which all-reduce each bucket as soon as all of its
    // gradients are ready, and average over the world size once backward finishes.
    // The Reducer stamps each gradient's ready time relative to this call.
    const int64_t t_armed = monotonic_ns();
    if (m.reducer && sync) m.reducer->prepare_for_backward({});
    // The loss is computed in fp32 even under autocast, as PyTorch's autocast does for cross_entropy.
    auto loss = torch::cross_entropy_loss(logits.to(torch::kFloat), target);
    double grad_norm = 0.0;
    int64_t t_backward = 0, t_backward_end = 0, t_grads_ready = 0;
    try {
      t_backward = monotonic_ns();
      (loss * loss_scale).backward();
      t_backward_end = t_grads_ready = monotonic_ns();
      if (m.reducer && sync) {
        // When backward's compute ended: the last gradient's ready time, which the Reducer records for
        // every parameter on every synchronising step (get_backward_stats, nanoseconds since
        // prepare_for_backward). After it, backward only waited in the Reducer's finalize for the buckets'
        // all-reduces. Without DDP, or on a no_sync micro-step, nothing waits: backward's end is its compute's.
        const auto ready = m.reducer->get_backward_stats();
        if (!ready.empty()) {
          const int64_t last = t_armed + *std::max_element(ready.begin(), ready.end());
          t_grads_ready = std::clamp(last, t_backward, t_backward_end);
        }
      }
      m.rng_state = generator.get_state();
      if (flags & DN_STEP_APPLY) {
        if (max_grad_norm > 0.0) {
          std::vector<torch::Tensor> params;
          for (auto& item : m.params) params.push_back(item.second);
          grad_norm = distrinews::clip_grad_norm(params, max_grad_norm).item<double>();
        }
        m.optimizer->step(lr);
        m.optimizer->zero_grad();
      }
    } catch (...) {
      // A step that failed half-way (out of memory, say) must not leave partial gradients behind for the
      // next micro-step to add to.
      m.optimizer->zero_grad();
      throw;
    }
    out->loss = loss.item<double>();
    out->grad_norm = grad_norm;
    out->correct = logits.argmax(1).eq(target).sum().item<int64_t>();
    out->count = batch;
    out->t_start = t_start;
    out->t_forward = t_forward;
    out->t_backward = t_backward;
    out->t_grads_ready = t_grads_ready;
    out->t_backward_end = t_backward_end;
    out->t_end = monotonic_ns();
  });
}

int32_t dn_model_trace_enable(dn_model* model, int32_t enabled) {
  return with_model(model, [&](dn_model& m) {
    // The Reducer takes a communication hook once, and DDP is attached without one unless tracing is on.
    require(!enabled || !m.reducer || m.trace_hook,
            "enable tracing before attaching DDP: the Reducer's recording hook is installed when it is created");
    m.trace->enabled = enabled != 0;
  });
}

int32_t dn_model_trace_drain(dn_model* model, dn_trace_event* out, int64_t cap, int64_t* written,
                             int64_t* pending) {
  return with_model(model, [&](dn_model& m) {
    require(written && pending, "written and pending must not be null");
    require(cap >= 0 && (out || cap == 0), "out must hold cap events");
    std::lock_guard<std::mutex> lock(m.trace->mutex);
    auto& events = m.trace->events;
    const auto n = std::min(static_cast<size_t>(cap), events.size());
    std::copy_n(events.begin(), n, out);
    events.erase(events.begin(), events.begin() + static_cast<std::ptrdiff_t>(n));
    *written = static_cast<int64_t>(n);
    *pending = static_cast<int64_t>(events.size());
  });
}

int32_t dn_predict(dn_model* model, const int32_t* input_ids, const uint8_t* attention_mask, int64_t batch,
                   int64_t seq, int32_t flags, float* logits, float* probs, int64_t capacity) {
  return with_model(model, [&](dn_model& m) {
    require(logits, "logits must not be null");
    require(batch > 0 && capacity == batch * m.config.num_labels, "output buffers must hold batch x num_labels = ",
            batch * m.config.num_labels, " floats, got ", capacity);
    c10::DeviceGuard device_guard(m.device);
    auto [ids, mask] = load_inputs(m, input_ids, attention_mask, batch, seq);
    c10::InferenceMode inference;
    m.net->eval();
    torch::Tensor out;
    {
      AutocastScope autocast(use_bf16(flags), m.device.type());
      // The unpadded path skips the [PAD] positions' compute and the last layer's non-[CLS] work.
      const auto real = mask.defined() ? mask : torch::ones_like(ids, torch::kBool);
      out = packable(real) ? m.net->forward_packed(ids, real) : m.net->forward(ids, mask);
    }
    out = out.to(torch::kCPU, torch::kFloat).contiguous();
    const auto n = static_cast<size_t>(batch * m.config.num_labels);
    std::memcpy(logits, out.data_ptr<float>(), n * sizeof(float));
    if (probs) std::memcpy(probs, torch::softmax(out, 1).data_ptr<float>(), n * sizeof(float));
  });
}

}  // extern "C"
