// What the opaque handles of distrinews.h hold.
#pragma once

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "distilbert.h"
#include "guard.h"
#include "optim.h"
#include "torch_thread.h"

namespace distrinews {

// dn_clock_ns's clock: monotonic, in nanoseconds (CLOCK_MONOTONIC on Linux, shared by the processes of one
// machine). Every timestamp of the ABI comes from here.
inline int64_t monotonic_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// What a tracing model records between two drains. Shared (not owned) by the Reducer's communication hook,
// whose completion callbacks run on the process group's threads: hence the mutex, and a shared_ptr so a
// late callback never touches a freed model.
struct TraceBuffer {
  static constexpr size_t kMaxEvents = size_t{1} << 20;
  std::atomic<bool> enabled{false};
  std::mutex mutex;
  std::vector<dn_trace_event> events;

  void record(const dn_trace_event& event) {
    std::lock_guard<std::mutex> lock(mutex);
    if (events.size() < kMaxEvents) events.push_back(event);
  }
};

}  // namespace distrinews

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
  // Tracing: the buffer, and whether the Reducer got the recording communication hook (only when tracing
  // was on as DDP was attached; see dn_model_trace_enable).
  std::shared_ptr<distrinews::TraceBuffer> trace = std::make_shared<distrinews::TraceBuffer>();
  bool trace_hook = false;
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
