#include "runtime/core/check.h"

namespace zt {

void check_failed(const char* file, int line, const char* cond, const std::string& msg) {
  throw CheckError(
      fmt::format("{}:{}: check failed: {}{}{}", file, line, cond, msg.empty() ? "" : ": ", msg));
}

}  // namespace zt
