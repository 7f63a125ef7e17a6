// The watch promises: each container's watch() future, completed only to fence the container
// (a lease its volumes depend on was lost), and the FenceSink through which the Rust core says so.
// The core decides when and why; this only keeps the promises. Mesos builds only; see build.rs.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include <mesos/slave/isolator.hpp>

#include <process/future.hpp>

#include "mesos-dvdi/src/ffi.rs.h"

namespace mesos_dvdi {

// A fence may come before the containerizer asks for the future (recover fences before watch is
// called for recovered containers), so either side creates the entry.
class Limitations {
public:
  process::Future<mesos::slave::ContainerLimitation> watch(const std::string& id);

  void fence(const std::string& id, const std::string& message);

  // The container is gone: its promise is dropped, never failed or discarded (a failed watch
  // future would destroy a container).
  void forget(const std::string& id);

private:
  std::shared_ptr<process::Promise<mesos::slave::ContainerLimitation>> promise(
      const std::string& id);

  std::mutex mutex;
  std::map<std::string, std::shared_ptr<process::Promise<mesos::slave::ContainerLimitation>>>
      promises;
};

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
