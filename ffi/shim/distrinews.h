/*
 * DistriNews native core: the whole C ABI between TypeScript (Deno.dlopen) and libtorch.
 *
 * Rules (see ffi/lib.ts, the only TypeScript file that knows this header):
 *  - Coarse calls: one call per training step or inference batch; no per-op calls.
 *  - Opaque handles; every function returns a status (DN_OK or a DN_ERR_* code). The message of the
 *    last failure is copied out with dn_last_error(handle, ...); handle-less calls use a process-wide slot.
 *  - No C++ exception, abort or assertion crosses this boundary: every entry point catches everything.
 *  - Buffers passed in are only read (or written) during the call; nothing keeps a pointer into them.
 *  - A model handle serialises its own calls with a mutex, so a nonblocking call on a Deno worker thread
 *    can never race another call on the same model.
 */
#ifndef DISTRINEWS_H
#define DISTRINEWS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DN_ABI_VERSION 8

/* The shim is compiled with -fvisibility=hidden; only this ABI is exported. */
#define DN_API __attribute__((visibility("default")))

/* Status codes. */
#define DN_OK 0
#define DN_ERR_INVALID_ARGUMENT 1 /* the caller passed something wrong: shapes, ids, labels, names */
#define DN_ERR_TORCH 2            /* libtorch raised an error */
#define DN_ERR_OUT_OF_MEMORY 3    /* host or device allocation failed */
#define DN_ERR_IO 4               /* a file could not be written */
#define DN_ERR_INTERNAL 5         /* anything else */

/* Element types accepted by dn_model_param_write (safetensors' F32, F16, BF16, F64). */
#define DN_DTYPE_F32 0
#define DN_DTYPE_F16 1
#define DN_DTYPE_BF16 2
#define DN_DTYPE_F64 3
#define DN_DTYPE_U8 4 /* only in training state (the RNG state) */

/* Flags of dn_train_step and dn_predict. */
#define DN_STEP_APPLY 1 /* after backward: clip gradients, AdamW step, zero gradients */
#define DN_BF16 2       /* run the forward pass under bf16 autocast (CUDA or CPU; fp32 master weights and AdamW) */
#define DN_PADDED 4     /* training: compute on the padded layout (the baseline) instead of the real tokens only */

#define DN_MAX_NDIM 8

/* DistilBertConfig's fields (Hugging Face names), all sizes explicit. */
typedef struct dn_config {
  int64_t vocab_size;
  int64_t max_position_embeddings;
  int64_t dim;
  int64_t n_layers;
  int64_t n_heads;
  int64_t hidden_dim;
  int64_t num_labels;
  int64_t pad_token_id;
  double dropout;
  double attention_dropout;
  double seq_classif_dropout;
  double initializer_range;
} dn_config;

/* What one training (micro-)step reports. grad_norm is the total L2 norm before clipping (0 when the
 * step did not apply the optimizer).
 *
 * The t_* fields say where the step's time went, as readings of dn_clock_ns's clock (nanoseconds), taken
 * on every step (a handful of clock reads: cheap enough to be always on):
 *   t_start        the call began: checking the batch and copying it to the device, DDP's bucket rebuild;
 *   t_forward      the forward pass began (it ends, with the loss, at t_backward);
 *   t_backward     backward began;
 *   t_grads_ready  the last gradient was ready: backward's compute ended. Under DDP on a synchronising step
 *                  this is the latest of the Reducer's own per-gradient ready times; otherwise t_backward_end;
 *   t_backward_end backward returned. Under DDP the Reducer copied the last gradients into their bucket,
 *                  launched its all-reduce, waited for every bucket's and copied the averages into .grad
 *                  before it returned: [t_grads_ready, t_backward_end] is the wait for communication that
 *                  backward's compute did not hide;
 *   t_end          the call ended: with DN_STEP_APPLY, [t_backward_end, t_end] is clipping, AdamW and
 *                  zeroing the gradients.
 * They are host times: on CUDA, kernels run asynchronously, so they show when the host queued the work
 * (the loss and gradient norm are read back, which synchronises, before t_end). */
typedef struct dn_step_result {
  double loss;
  double grad_norm;
  int64_t correct;
  int64_t count;
  int64_t t_start;
  int64_t t_forward;
  int64_t t_backward;
  int64_t t_grads_ready;
  int64_t t_backward_end;
  int64_t t_end;
} dn_step_result;

/* Kinds of dn_trace_event. */
#define DN_TRACE_ALLREDUCE 1 /* one gradient bucket's all-reduce, from launch to completion */

/* One event recorded while tracing is on (dn_model_trace_enable), drained with dn_model_trace_drain.
 * DN_TRACE_ALLREDUCE: recorded by a communication hook on c10d's Reducer; start_ns is when the Reducer
 * handed the bucket to the process group (all of its gradients were ready), end_ns when the all-reduce's
 * future completed. bucket is the bucket's index (buckets are launched in index order), bytes the size of
 * its flat gradient buffer, params the number of parameter tensors in it. On CUDA, NCCL's future completes
 * when the collective is queued on the stream, so end_ns shows the launch there, not the transfer. */
typedef struct dn_trace_event {
  int32_t kind;
  int32_t bucket;
  int64_t start_ns;
  int64_t end_ns;
  int64_t bytes;
  int64_t params;
} dn_trace_event;

typedef struct dn_model dn_model;
typedef struct dn_group dn_group;

/* ---- process-wide ---- */
DN_API int32_t dn_abi_version(void);
/* Copies the last error message of `model` (or of the last handle-less call when model is NULL) into
 * buf (NUL-terminated, truncated to cap). Returns the message length. */
DN_API int64_t dn_last_error(dn_model* model, char* buf, int64_t cap);
/* Copies the libtorch version string ("2.11.0"). Returns its length. */
DN_API int64_t dn_torch_version(char* buf, int64_t cap);
/* Intra-op threads (and inter-op threads when interop > 0; only settable before any parallel work). */
DN_API int32_t dn_set_num_threads(int32_t intra, int32_t interop);
DN_API int32_t dn_get_num_threads(void);
/* Number of visible CUDA devices (0 without CUDA support or devices). */
DN_API int32_t dn_cuda_device_count(void);
/* Seeds libtorch's global CPU and CUDA generators. Models keep their own dropout streams (seeded by
 * dn_model_create), so this only affects code that uses the global generators directly. */
DN_API int32_t dn_manual_seed(uint64_t seed);

/* torch.randperm(n, generator=torch.Generator().manual_seed(seed)) into out (n int64 values): the
 * permutation torch.utils.data.DistributedSampler shuffles with. */
DN_API int32_t dn_randperm(int64_t n, uint64_t seed, int64_t* out);

/* The clock every timestamp of this ABI is read from (dn_step_result's t_*, dn_trace_event, the barrier
 * clock): a monotonic clock in nanoseconds (std::chrono::steady_clock, CLOCK_MONOTONIC on Linux, shared by
 * all processes of one machine; its origin is arbitrary, only differences and same-machine comparisons mean
 * anything). */
DN_API int32_t dn_clock_ns(int64_t* out);

/* Hands the host memory the C allocator keeps free back to the operating system (glibc's malloc_trim).
 * *released is 1 when some was returned, 0 when none was or the allocator cannot (not glibc). */
DN_API int32_t dn_trim_host_memory(int32_t* released);

/* ---- model ---- */
/* Creates DistilBertForSequenceClassification on cuda:device_index (or the CPU when device_index < 0),
 * initialised as Hugging Face's _init_weights does, from `seed`. */
DN_API int32_t dn_model_create(const dn_config* config, int32_t device_index, uint64_t seed, dn_model** out);
DN_API void dn_model_free(dn_model* model);

/* Parameters in state_dict order, named as in Hugging Face's DistilBertForSequenceClassification. */
DN_API int32_t dn_model_param_count(dn_model* model, int64_t* out);
/* Name (NUL-terminated, truncated to name_cap) and shape (up to DN_MAX_NDIM dims) of parameter i. */
DN_API int32_t dn_model_param_info(dn_model* model, int64_t i, char* name, int64_t name_cap, int64_t* shape,
                            int32_t* ndim);
/* Copies parameter i as float32 into out (numel floats). */
DN_API int32_t dn_model_param_read(dn_model* model, int64_t i, float* out, int64_t numel);
/* Overwrites parameter i from host bytes of the given DN_DTYPE_*; nbytes must equal numel * size. */
DN_API int32_t dn_model_param_write(dn_model* model, int64_t i, int32_t dtype, const void* data, int64_t nbytes);
/* Writes the state_dict with torch::pickle_save (readable by Python's torch.load(weights_only=True)). */
DN_API int32_t dn_model_save_pt(dn_model* model, const char* path);

/* Training state beyond the weights, for resuming a run exactly: for each parameter (state_dict order)
 * "optimizer.exp_avg.<name>", "optimizer.exp_avg_sq.<name>", "optimizer.step.<name>" (float32), then
 * "rng_state" (uint8: the model's dropout stream). Enumerated and copied like parameters; read and write
 * take the exact byte size. */
DN_API int32_t dn_train_state_count(dn_model* model, int64_t* out);
DN_API int32_t dn_train_state_info(dn_model* model, int64_t i, char* name, int64_t name_cap, int64_t* shape,
                                   int32_t* ndim, int32_t* dtype);
DN_API int32_t dn_train_state_read(dn_model* model, int64_t i, void* out, int64_t nbytes);
DN_API int32_t dn_train_state_write(dn_model* model, int64_t i, const void* data, int64_t nbytes);

/* AdamW as torch.optim.AdamW; weight decay only on weight matrices (not on biases or LayerNorm weights),
 * as Hugging Face's Trainer groups them. Resets optimizer state. */
DN_API int32_t dn_optimizer_configure(dn_model* model, double weight_decay, double beta1, double beta2, double eps);

/* One training micro-step: forward, cross-entropy (mean over the batch) times loss_scale, backward
 * (gradients accumulate). With DN_STEP_APPLY it then clips the total gradient norm to max_grad_norm
 * (when > 0), steps AdamW with learning rate lr and zeroes the gradients.
 * input_ids [batch, seq] int32, attention_mask [batch, seq] uint8 (1 = token, 0 = padding), labels [batch]. */
DN_API int32_t dn_train_step(dn_model* model, const int32_t* input_ids, const uint8_t* attention_mask,
                      const int32_t* labels, int64_t batch, int64_t seq, double lr, double max_grad_norm,
                      double loss_scale, int32_t flags, dn_step_result* out);

/* Tracing (train.ts --trace). enabled != 0 starts recording dn_trace_events into a per-model buffer; 0 stops
 * (the buffer keeps what it holds). Bucket all-reduces are recorded by a communication hook that
 * dn_model_attach_ddp installs on the Reducer only when tracing is on at that moment (the Reducer accepts a
 * hook only once, and without one it runs its default path untouched): so enabling tracing on a model that
 * is already attached without the hook is refused. With the hook, results are bit-identical to the default
 * path. Without tracing nothing is recorded and nothing changes. */
DN_API int32_t dn_model_trace_enable(dn_model* model, int32_t enabled);
/* Moves up to cap recorded events into out, in the order they were recorded (all-reduces: as they completed);
 * *written says how many, *pending how many are left for the next call. A step's events are all recorded by
 * the time dn_train_step returns. The buffer holds at most 1,048,576 events; later ones are dropped until it
 * is drained. */
DN_API int32_t dn_model_trace_drain(dn_model* model, dn_trace_event* out, int64_t cap, int64_t* written,
                                    int64_t* pending);

/* Inference (eval mode, no autograd): writes logits and, when probs is not NULL, softmax probabilities,
 * both [batch, num_labels] float32; capacity is the length of each buffer in floats and must equal
 * batch * num_labels. */
DN_API int32_t dn_predict(dn_model* model, const int32_t* input_ids, const uint8_t* attention_mask, int64_t batch,
                          int64_t seq, int32_t flags, float* logits, float* probs, int64_t capacity);

/* ---- distributed data parallel (c10d) ---- */
/* Joins a process group through a c10d TCPStore at master_addr:master_port, as
 * torch.distributed.init_process_group(init_method="env://") does. host_store: whether this process
 * serves the store (rank 0, unless a launcher's agent already serves it). backend: "gloo" (CPU tensors), or
 * "nccl" in CUDA builds (CUDA tensors through NCCL, CPU tensors still through Gloo).
 * Blocks until all world_size ranks have joined or timeout_ms passes. */
DN_API int32_t dn_group_create(const char* master_addr, int32_t master_port, int32_t rank, int32_t world_size,
                               int32_t host_store, const char* backend, int64_t timeout_ms, dn_group** out);
DN_API void dn_group_free(dn_group* group);
DN_API int64_t dn_group_last_error(dn_group* group, char* buf, int64_t cap);
/* Sums n doubles element-wise across ranks, in place (metrics: loss sums, counts). */
DN_API int32_t dn_group_allreduce_sum(dn_group* group, double* values, int64_t n);
/* Returns once every rank has called it. */
DN_API int32_t dn_group_barrier(dn_group* group);
/* A barrier that reads dn_clock_ns's clock into *clock_ns the moment it returns on this rank, on the thread
 * that waited (no trip through the caller's event loop in between): every rank leaves a barrier at nearly
 * the same instant, which is what aligning the ranks' clocks for a trace rests on. */
DN_API int32_t dn_group_barrier_clock(dn_group* group, int64_t* clock_ns);
/* Wraps the model in DDP: copies rank 0's parameters to every rank (so differently seeded ranks start
 * identical), then attaches c10d's Reducer, which averages gradients over the group in buckets of
 * bucket_cap_bytes (the first one first_bucket_cap_bytes) while backward runs. From then on a training step
 * with DN_STEP_APPLY synchronises gradients; one without (a gradient-accumulation micro-step) does not, as
 * DDP's no_sync(). When the model is tracing (dn_model_trace_enable), the Reducer gets a communication hook
 * that does what its default path does (average, then all-reduce) and records each bucket's timing. */
DN_API int32_t dn_model_attach_ddp(dn_model* model, dn_group* group, int64_t bucket_cap_bytes,
                                   int64_t first_bucket_cap_bytes);

#ifdef __cplusplus
}
#endif

#endif /* DISTRINEWS_H */
