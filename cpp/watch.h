// The watch promises: each container's watch() future, completed only to fence the container
// (a lease its volumes depend on was lost), and the FenceSink through which the Rust core says so.
// The core decides when and why; this only keeps the promises, by the rules of watch_table.h.
// Mesos builds only; see build.rs.
#pragma once

#include <memory>
#include <utility>

#include <mesos/slave/isolator.hpp>

#include <process/future.hpp>

#include "mesos-dvdi/cpp/watch_table.h"
#include "mesos-dvdi/src/ffi.rs.h"

namespace mesos_dvdi {

using Limitations = WatchTable<process::Promise<mesos::slave::ContainerLimitation>>;

// The core's fencing, into the table above.
class PromiseFenceSink : public FenceSink {
public:
  explicit PromiseFenceSink(std::shared_ptr<Limitations> limitations)
    : limitations(std::move(limitations)) {}

  // Called from Rust, which cannot take a C++ exception: nothing may escape.
  void fence(rust::Str container_id, rust::Str message) const override;

private:
  std::shared_ptr<Limitations> limitations;
};

}  // namespace mesos_dvdi
