// Where the Rust core says that a container must be stopped (fenced) because a cluster-wide lease
// its volumes depend on was lost: the Mesos shim completes the container's watch() future with a
// ContainerLimitation carrying `message`; the test harness records the call.
#pragma once

#include "rust/cxx.h"

namespace mesos_dvdi {

class FenceSink {
public:
  virtual ~FenceSink() {}

  // Called from a thread of the Rust core (the coordination layer's, or a recover call's); must
  // be safe to call from any thread at once.
  virtual void fence(rust::Str container_id, rust::Str message) const = 0;
};

} // namespace mesos_dvdi
