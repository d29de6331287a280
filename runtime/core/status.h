// Status and Result<T>: how failures of the environment (I/O, config, data, network, memory, a peer
// gone) travel. A message names the thing that failed (file, key and line, rank, op, sizes) and,
// where it can, what to do next. Broken invariants use ZT_CHECK (check.h) instead.
#pragma once

#include <exception>
#include <optional>
#include <string>
#include <utility>
#include <variant>

#include <fmt/format.h>

namespace zt {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,  // bad config value, bad flag
  kNotFound,         // missing file or key
  kIoError,          // read/write/mmap failure, full disk
  kDataError,        // malformed data, checkpoint or message
  kOutOfMemory,
  kUnsupported,  // an op/dtype/combination a backend cannot do
  kInternal,
  kTimeout,
  kAborted,
};

const char* status_code_name(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok() { return {}; }
  bool is_ok() const { return code_ == StatusCode::kOk; }
  explicit operator bool() const { return is_ok(); }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  std::string to_string() const;

  // Prepends context, building a trail like NCCL's: "loading checkpoint: reading x: short read".
  Status with_context(const std::string& context) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

template <typename... Args>
Status make_error(StatusCode code, fmt::format_string<Args...> f, Args&&... args) {
  return Status(code, fmt::format(f, std::forward<Args>(args)...));
}

// Carries a Status through code that cannot return one (callbacks such as ModelStateHooks); the
// caller that can return a Status catches it at the boundary (e.g. Trainer::step).
class StatusError : public std::exception {
 public:
  explicit StatusError(Status status) : status_(std::move(status)), what_(status_.to_string()) {}
  const Status& status() const { return status_; }
  const char* what() const noexcept override { return what_.c_str(); }

 private:
  Status status_;
  std::string what_;
};

// Result<T>: a value or a non-ok Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}         // NOLINT(implicit)
  Result(Status status) : v_(std::move(status)) {}  // NOLINT(implicit)

  bool is_ok() const { return std::holds_alternative<T>(v_); }
  explicit operator bool() const { return is_ok(); }
  const Status& status() const {
    static const Status kOkStatus;
    return is_ok() ? kOkStatus : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &std::get<T>(v_); }
  const T* operator->() const { return &std::get<T>(v_); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace zt

// Returns early from the enclosing function when a Status-returning expression fails.
#define ZT_RETURN_IF_ERROR(expr)                \
  do {                                          \
    ::zt::Status zt_status_ = (expr);           \
    if (!zt_status_.is_ok()) return zt_status_; \
  } while (0)

#define ZT_CONCAT_INNER_(a, b) a##b
#define ZT_CONCAT_(a, b) ZT_CONCAT_INNER_(a, b)
// `ZT_ASSIGN_OR_RETURN(auto x, f());` binds the value or returns the error.
#define ZT_ASSIGN_OR_RETURN(lhs, expr)                                                             \
  auto ZT_CONCAT_(zt_result_, __LINE__) = (expr);                                                  \
  if (!ZT_CONCAT_(zt_result_, __LINE__).is_ok()) return ZT_CONCAT_(zt_result_, __LINE__).status(); \
  lhs = std::move(ZT_CONCAT_(zt_result_, __LINE__)).value()
