// What the opaque handles of distrinews.h hold.
#pragma once

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>

#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "distilbert.h"
#include "guard.h"
#include "optim.h"
#include "torch_thread.h"

struct dn_group {
  c10::intrusive_ptr<c10d::ProcessGroup> group;
  int rank = 0;
  int world_size = 1;
  bool nccl = false;  // CUDA tensors go through NCCL (else everything through Gloo)
  distrinews::ErrorSlot errors;
};

struct dn_model {
  dn_model(const dn_config& c, torch::Device d, distrinews::DistilBertForSequenceClassification n)
      : config(c), device(d), net(std::move(n)) {}

  dn_config config;
  torch::Device device;
  distrinews::DistilBertForSequenceClassification net;
  std::vector<std::pair<std::string, torch::Tensor>> params;  // state_dict order
  std::unique_ptr<distrinews::AdamW> optimizer;
  // This model's own random stream (dropout), so two models in one process never perturb each other and
  // a run is reproducible from its seed alone. Swapped into the device's default generator per step.
  at::Tensor rng_state;
  // DDP: PyTorch's own Reducer, which all-reduces gradient buckets while backward is still running.
  c10::intrusive_ptr<c10d::ProcessGroup> group;
  std::unique_ptr<c10d::Reducer> reducer;
  std::mutex mutex;  // one call at a time per model
  distrinews::ErrorSlot errors;
};

inline distrinews::ErrorSlot* errors_of(dn_model* m) { return m ? &m->errors : nullptr; }
inline distrinews::ErrorSlot* errors_of(dn_group* g) { return g ? &g->errors : nullptr; }

namespace distrinews {

inline dn_model& checked(dn_model* model) {
  if (!model) throw InvalidArgument("model handle is null");
  return *model;
}

inline dn_group& checked(dn_group* group) {
  if (!group) throw InvalidArgument("process group handle is null");
  return *group;
}

// The one way an entry point of the ABI runs its body: on the torch thread (torch_thread.h says why), under
// the guard (every exception becomes a status code and a message kept in `slot`).
template <typename F>
int32_t entry_point(ErrorSlot* slot, F&& body) {
  return TorchThread::run([&] { return guarded(slot, body); });
}

// An entry point on a model: the handle checked, then one call at a time on that model (its mutex), since
// Deno's nonblocking calls may arrive from several worker threads.
template <typename F>
int32_t with_model(dn_model* model, F&& body) {
  return entry_point(errors_of(model), [&] {
    auto& m = checked(model);
    std::lock_guard<std::mutex> lock(m.mutex);
    body(m);
  });
}

// An entry point on a process group: the handle checked. Collectives need no lock of their own: every call
// runs on the torch thread, one at a time.
template <typename F>
int32_t with_group(dn_group* group, F&& body) {
  return entry_point(errors_of(group), [&] { body(checked(group)); });
}

}  // namespace distrinews
