// ZT_CHECK: broken invariants (a bug, not bad input) throw zt::CheckError with file:line and a
// formatted message. The worker's main catches it, reports, and aborts the job rather than hang.
#pragma once

#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace zt {

class CheckError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

[[noreturn]] void check_failed(const char* file, int line, const char* cond,
                               const std::string& msg);

}  // namespace zt

#define ZT_CHECK(cond, ...)                                                         \
  do {                                                                              \
    if (!(cond)) [[unlikely]]                                                       \
      ::zt::check_failed(__FILE__, __LINE__, #cond, ::fmt::format("" __VA_ARGS__)); \
  } while (0)

// Turns a non-ok Status into a CheckError; for places where failure is a bug.
#define ZT_CHECK_OK(expr)                                                                   \
  do {                                                                                      \
    ::zt::Status zt_st_ = (expr);                                                           \
    if (!zt_st_.is_ok()) ::zt::check_failed(__FILE__, __LINE__, #expr, zt_st_.to_string()); \
  } while (0)
