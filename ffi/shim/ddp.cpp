// Distributed data parallel through PyTorch's own c10d: a TCPStore rendezvous, a Gloo process group, and
// the Reducer that DistributedDataParallel uses (bucketed, averaged all-reduce overlapped with backward).
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/comm.hpp>
#ifdef DISTRINEWS_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <chrono>
#include <cstdlib>
#include <limits>
#include <memory>
#include <string>
#include <unordered_map>

#include "distrinews.h"
#include "guard.h"
#include "torch_thread.h"
#include "handles.h"

using distrinews::guarded;
using distrinews::require;

namespace {

// Gloo always serves CPU tensors (metrics, and CPU models); with use_nccl, NCCL serves CUDA tensors and is
// the default, as torch.distributed's "cpu:gloo,cuda:nccl".
c10::intrusive_ptr<c10d::ProcessGroup> make_group(const std::string& host, int port, int rank, int size,
                                                  bool host_store, bool use_nccl, std::chrono::milliseconds timeout) {
  c10d::TCPStoreOptions store_options;
  store_options.port = static_cast<std::uint16_t>(port);
  // Rank 0 hosts the rendezvous store, unless a launcher already does (torchrun's agent: then every rank
  // connects as a client), the rule torch.distributed's env:// init follows.
  store_options.isServer = host_store;
  store_options.numWorkers = static_cast<std::size_t>(size);
  store_options.timeout = timeout;
  // The classic TCP server: with the libuv one, the other ranks' connections timed out here.
  store_options.useLibUV = false;
  c10::intrusive_ptr<c10d::Store> store = c10::make_intrusive<c10d::TCPStore>(host, store_options);
  // torch.distributed namespaces the default group's keys the same way.
  store = c10::make_intrusive<c10d::PrefixStore>("default_pg", store);

  auto options = c10d::ProcessGroupGloo::Options::create(timeout);
  // As PyTorch: GLOO_SOCKET_IFNAME picks the network interface; otherwise the host's own address.
  if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname) {
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
  } else {
    options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  }
  auto gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, options);

  auto group = c10::make_intrusive<c10d::ProcessGroup>(store, rank, size);
  group->setDefaultBackend(c10d::ProcessGroup::BackendType::GLOO);
  group->setBackend(c10::DeviceType::CPU, c10d::ProcessGroup::BackendType::GLOO, gloo);
#ifdef DISTRINEWS_NCCL
  if (use_nccl) {
    auto nccl_options = c10d::ProcessGroupNCCL::Options::create();
    nccl_options->timeout = timeout;
    // NCCL keeps its own keys in the store; a prefix keeps them apart from Gloo's.
    auto nccl_store = c10::make_intrusive<c10d::PrefixStore>("nccl", store);
    auto nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(nccl_store, rank, size, nccl_options);
    group->setBackend(c10::DeviceType::CUDA, c10d::ProcessGroup::BackendType::NCCL, nccl);
    group->setDefaultBackend(c10d::ProcessGroup::BackendType::NCCL);
  }
#else
  TORCH_CHECK(!use_nccl, "this build has no NCCL (it was compiled without CUDA)");
#endif
  return group;
}

// The Reducer's default all-reduce with a stopwatch: what dn_model_attach_ddp installs when the model is
// tracing, so each bucket's launch and completion are timed where they happen, inside the Reducer.
//
// The Reducer calls runHook(bucket) from backward, on the autograd thread, as soon as every gradient of the
// bucket (and of every bucket before it: buckets go out in index order) has been copied into the bucket's
// flat buffer, and waits on the returned future only at the end of backward (finalize_backward). Between the
// two, the all-reduce runs on the process group's threads while backward keeps computing: the overlap DDP
// exists for, and what the trace shows.
//
// Averaging, exactly as the default path does it. Without a hook, the Reducer multiplies each gradient by
// 1 / world size as it copies it into the bucket (mul_out with the reciprocal as a wrapped double scalar),
// then _AllReduceBySumCommHook sums. With any hook it copies the gradient unscaled, and averaging is the
// hook's job. c10d's own AllReduceCommHook divides the buffer by the world size (`tensor /= size`), which
// rounds differently from multiplying by the reciprocal when the world size is not a power of two; this
// hook multiplies by the same reciprocal, computed the same way (a double, applied in float), so a traced
// run's gradients are bit-identical to an untraced one's. The all-reduce itself is the same call on the same
// buffer. parseHookResult is CppCommHookInterface's, the one the Reducer applies to its default futures too.
//
// Completion: the future handed back is the all-reduce's future chained with then(): the callback runs on
// the process group's thread the moment the all-reduce completes, stamps the time and passes the value
// through unchanged, and only then does the chained future complete. The Reducer waits on the chained one,
// so by the time backward returns every bucket's event is in the buffer.
class TracedAllReduce : public c10d::CppCommHookInterface<c10::intrusive_ptr<c10d::ProcessGroup>> {
 public:
  TracedAllReduce(c10::intrusive_ptr<c10d::ProcessGroup> group, std::shared_ptr<distrinews::TraceBuffer> trace)
      : CppCommHookInterface(std::move(group)), trace_(std::move(trace)) {}

  c10::intrusive_ptr<c10::ivalue::Future> runHook(c10d::GradBucket& bucket) override {
    auto& buffer = bucket.getBufferRef();
    buffer.mul_(double(1.) / static_cast<double>(state_->getSize()));
    std::vector<at::Tensor> tensors{buffer};
    dn_trace_event event{};
    event.kind = DN_TRACE_ALLREDUCE;
    event.bucket = static_cast<int32_t>(bucket.getIndex());
    event.bytes = buffer.numel() * static_cast<int64_t>(buffer.element_size());
    event.params = static_cast<int64_t>(bucket.getParameters().size());
    event.start_ns = distrinews::monotonic_ns();
    auto future = state_->allreduce(tensors)->getFuture();
    if (!trace_->enabled) return future;
    return future->then(
        [trace = trace_, event](c10::ivalue::Future& done) {
          auto completed = event;
          completed.end_ns = distrinews::monotonic_ns();
          trace->record(completed);
          return done.value();
        },
        future->elementType());
  }

 private:
  std::shared_ptr<distrinews::TraceBuffer> trace_;
};

}  // namespace

extern "C" {

int32_t dn_group_create(const char* master_addr, int32_t master_port, int32_t rank, int32_t world_size,
                        int32_t host_store, const char* backend, int64_t timeout_ms, dn_group** out) {
  return distrinews::entry_point(nullptr, [&] {
    require(out && master_addr && *master_addr && backend, "master address, backend and out must be given");
    *out = nullptr;
    require(world_size >= 1, "world size must be >= 1, got ", world_size);
    require(rank >= 0 && rank < world_size, "rank ", rank, " is outside [0, ", world_size, ")");
    require(master_port > 0 && master_port < 65536, "master port must be in 1..65535, got ", master_port);
    require(timeout_ms > 0, "timeout must be positive");
    const std::string name(backend);
#ifdef DISTRINEWS_NCCL
    require(name == "gloo" || name == "nccl", "unknown backend \"", name, "\" (gloo or nccl)");
#else
    require(name == "gloo", "backend \"", name, "\" is not available in this build (gloo is; nccl needs CUDA)");
#endif
    auto handle = std::make_unique<dn_group>();
    handle->group = make_group(master_addr, master_port, rank, world_size, host_store != 0, name == "nccl",
                               std::chrono::milliseconds(timeout_ms));
    handle->nccl = name == "nccl";
    handle->rank = rank;
    handle->world_size = world_size;
    *out = handle.release();
  });
}

void dn_group_free(dn_group* group) {
  try {
    delete group;
  } catch (...) {
  }
}

int64_t dn_group_last_error(dn_group* group, char* buf, int64_t cap) {
  return distrinews::copy_string(distrinews::read_error(errors_of(group)), buf, cap);
}

int32_t dn_group_allreduce_sum(dn_group* group, double* values, int64_t n) {
  return distrinews::with_group(group, [&](dn_group& g) {
    require(n >= 0 && (values || n == 0), "values must hold n doubles");
    if (n == 0) return;
    auto tensor = torch::from_blob(values, {n}, torch::kDouble).clone();
    std::vector<at::Tensor> tensors{tensor};
    g.group->allreduce(tensors)->wait();
    std::memcpy(values, tensor.data_ptr<double>(), static_cast<size_t>(n) * sizeof(double));
  });
}

int32_t dn_group_barrier(dn_group* group) {
  return distrinews::with_group(group, [](dn_group& g) { g.group->barrier()->wait(); });
}

int32_t dn_group_barrier_clock(dn_group* group, int64_t* clock_ns) {
  return distrinews::with_group(group, [&](dn_group& g) {
    require(clock_ns, "clock_ns must not be null");
    g.group->barrier()->wait();
    *clock_ns = distrinews::monotonic_ns();
  });
}

int32_t dn_model_attach_ddp(dn_model* model, dn_group* group, int64_t bucket_cap_bytes,
                            int64_t first_bucket_cap_bytes) {
  return distrinews::with_model(model, [&](dn_model& m) {
    auto& g = distrinews::checked(group);
    require(bucket_cap_bytes > 0 && first_bucket_cap_bytes > 0, "bucket sizes must be positive");
    require(!m.reducer, "this model is already attached to a process group");
    // Gradients are reduced on the model's device: CPU tensors by Gloo, CUDA tensors by NCCL.
    require(m.device.is_cpu() || g.nccl, "a CUDA model needs an nccl process group (this one is gloo)");
    require(!m.device.is_cpu() || !g.nccl, "a CPU model needs a gloo process group (this one is nccl)");
    c10::DeviceGuard device_guard(m.device);
    std::vector<at::Tensor> params;
    std::unordered_map<size_t, std::string> names;
    for (size_t i = 0; i < m.params.size(); ++i) {
      params.push_back(m.params[i].second);
      names[i] = m.params[i].first;
    }
    {
      // Every rank starts from rank 0's weights, whatever its own seed was (DDP's _sync_module_states).
      c10::NoGradGuard no_grad;
      c10d::broadcast_coalesced(g.group, params, /*buffer_size=*/250 * 1024 * 1024, /*rank=*/0);
    }
    // As DistributedDataParallel without find_unused_parameters: one bucket for the first iteration, then
    // the Reducer rebuilds buckets in the order gradients actually became ready, with a small first bucket
    // (1 MiB by default) so that the all-reduce starts early in backward, and bucket_cap_bytes after it.
    const std::vector<bool> dense(params.size(), false);
    auto [buckets, limits] =
        c10d::compute_bucket_assignment_by_size(params, {std::numeric_limits<size_t>::max()}, dense);
    (void)limits;
    std::reverse(buckets.begin(), buckets.end());
    m.reducer = std::make_unique<c10d::Reducer>(
        params, std::move(buckets), g.group, dense, bucket_cap_bytes, /*find_unused_parameters=*/false,
        /*gradient_as_bucket_view=*/false, std::move(names), first_bucket_cap_bytes,
        /*skip_all_reduce_unused_params=*/false, /*use_python_reducer=*/false,
        /*bucket_bytes_cap_list=*/std::vector<int64_t>{});
    // Only a tracing model gets the hook: without one the Reducer keeps its default path, untouched.
    if (m.trace->enabled) {
      m.reducer->register_comm_hook(std::make_unique<TracedAllReduce>(g.group, m.trace));
      m.trace_hook = true;
    }
    m.group = g.group;
  });
}

}  // extern "C"
