// Every libtorch call of the ABI runs on one long-lived thread, the torch thread.
//
// Why: libtorch's CPU kernels parallelise with OpenMP, and OpenMP keeps a pool of worker threads per
// calling thread. Deno runs blocking FFI calls on its main thread and nonblocking ones on whichever worker
// thread is free, so without this several pools would exist, and a thread computing while another live
// thread owns a pool was measured about a quarter slower (31 ms against 39-45 ms for one forward pass on a
// 2-core machine; Python threads show the same). With one thread doing all the tensor work, there is one
// pool.
//
// The calling thread waits for the call to finish, so blocking and nonblocking calls keep their meaning.
// A call made on the torch thread itself runs inline.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

namespace distrinews {

class TorchThread {
 public:
  // Runs `call` (a guarded() body: it never throws) on the torch thread and returns its status.
  template <typename F>
  static int32_t run(F&& call) {
    auto& self = instance();
    if (std::this_thread::get_id() == self.id_) return call();
    int32_t status = 0;
    bool done = false;
    std::mutex m;
    std::condition_variable cv;
    {
      std::lock_guard<std::mutex> lock(self.mutex_);
      self.queue_.emplace_back([&] {
        const int32_t s = call();
        std::lock_guard<std::mutex> l(m);
        status = s;
        done = true;
        cv.notify_one();
      });
    }
    self.ready_.notify_one();
    std::unique_lock<std::mutex> lock(m);
    cv.wait(lock, [&] { return done; });
    return status;
  }

 private:
  TorchThread() {
    std::thread worker([this] { loop(); });
    id_ = worker.get_id();
    // Never joined: the process may exit while the thread waits for work, which is harmless, whereas a
    // joinable std::thread destroyed at exit would call std::terminate.
    worker.detach();
  }

  // Leaked on purpose, for the same reason: no destructor runs at exit.
  static TorchThread& instance() {
    static TorchThread* self = new TorchThread();
    return *self;
  }

  void loop() {
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        ready_.wait(lock, [this] { return !queue_.empty(); });
        task = std::move(queue_.front());
        queue_.pop_front();
      }
      task();
    }
  }

  std::thread::id id_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> queue_;
};

}  // namespace distrinews
