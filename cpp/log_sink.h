// Where the Rust core's log records go: the Mesos shim implements this with glog (the agent's
// log), the test harness with stderr. Abstract, so the Rust library links against no particular
// implementation.
#pragma once

#include <cstdint>

#include "rust/cxx.h"

namespace mesos_dvdi {

class LogSink {
public:
  virtual ~LogSink() {}

  // level: 1 error, 2 warn, 3 info, 4 debug, 5 trace (the `log` crate's order).
  virtual void log(uint8_t level, rust::Str message) const = 0;
};

} // namespace mesos_dvdi
