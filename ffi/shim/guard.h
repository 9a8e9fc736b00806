// The ABI's error discipline: every entry point runs its body through guarded(), which turns every C++
// exception into a status code and keeps the message (without backtrace) in an ErrorSlot, one per handle
// plus one for handle-less calls. Nothing thrown inside can reach Deno.
#pragma once

#include <c10/util/Exception.h>
#include <c10/util/StringUtil.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>

#include "distrinews.h"

namespace distrinews {

// Errors the caller caused; reported as DN_ERR_INVALID_ARGUMENT.
struct InvalidArgument : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// A file could not be written; reported as DN_ERR_IO.
struct IoError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The last error message of one handle. Nonblocking calls run on Deno's worker threads, hence the mutex.
struct ErrorSlot {
  std::mutex mutex;
  std::string message;
};

// For calls without a handle (made from the JS main thread).
inline ErrorSlot g_errors;

inline void set_error(ErrorSlot* slot, std::string message) {
  auto& s = slot ? *slot : g_errors;
  std::lock_guard<std::mutex> lock(s.mutex);
  s.message = std::move(message);
}

inline std::string read_error(ErrorSlot* slot) {
  auto& s = slot ? *slot : g_errors;
  std::lock_guard<std::mutex> lock(s.mutex);
  return s.message;
}

template <typename F>
int32_t guarded(ErrorSlot* slot, F&& body) {
  try {
    body();
    return DN_OK;
  } catch (const InvalidArgument& e) {
    set_error(slot, e.what());
    return DN_ERR_INVALID_ARGUMENT;
  } catch (const IoError& e) {
    set_error(slot, e.what());
    return DN_ERR_IO;
  } catch (const c10::OutOfMemoryError& e) {
    set_error(slot, e.what_without_backtrace());
    return DN_ERR_OUT_OF_MEMORY;
  } catch (const c10::Error& e) {
    // what() carries a C++ backtrace; users get the message only.
    set_error(slot, e.what_without_backtrace());
    return DN_ERR_TORCH;
  } catch (const std::bad_alloc&) {
    set_error(slot, "out of host memory");
    return DN_ERR_OUT_OF_MEMORY;
  } catch (const std::exception& e) {
    set_error(slot, e.what());
    return DN_ERR_INTERNAL;
  } catch (...) {
    set_error(slot, "unknown native error");
    return DN_ERR_INTERNAL;
  }
}

template <typename... Args>
void require(bool ok, const Args&... parts) {
  if (!ok) throw InvalidArgument(c10::str(parts...));
}

// Copies s into buf (NUL-terminated, truncated to cap); returns s's full length.
inline int64_t copy_string(const std::string& s, char* buf, int64_t cap) {
  if (buf && cap > 0) {
    const auto n = std::min<int64_t>(cap - 1, static_cast<int64_t>(s.size()));
    std::memcpy(buf, s.data(), static_cast<size_t>(n));
    buf[n] = '\0';
  }
  return static_cast<int64_t>(s.size());
}

}  // namespace distrinews
