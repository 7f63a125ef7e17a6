// The watch promises (see watch.h): the table of each container's watch() promise and the
// FenceSink that completes one when the Rust core fences its container.

#include "mesos-dvdi/cpp/watch.h"

#include <exception>

#include <glog/logging.h>

#include <mesos/mesos.hpp>

namespace mesos_dvdi {

process::Future<mesos::slave::ContainerLimitation> Limitations::watch(const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex);
  return promise(id)->future();
}

void Limitations::fence(const std::string& id, const std::string& message) {
  mesos::slave::ContainerLimitation limitation;
  limitation.set_message(message);
  limitation.set_reason(mesos::TaskStatus::REASON_CONTAINER_LIMITATION);
  std::lock_guard<std::mutex> lock(mutex);
  promise(id)->set(limitation);
}

void Limitations::forget(const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex);
  promises.erase(id);
}

std::shared_ptr<process::Promise<mesos::slave::ContainerLimitation>> Limitations::promise(
    const std::string& id) {
  std::shared_ptr<process::Promise<mesos::slave::ContainerLimitation>>& p = promises[id];
  if (!p) p.reset(new process::Promise<mesos::slave::ContainerLimitation>());
  return p;
}

void PromiseFenceSink::fence(rust::Str container_id, rust::Str message) const {
  try {
    const std::string id(container_id.data(), container_id.size());
    const std::string reason(message.data(), message.size());
    LOG(WARNING) << "mesos-dvdi: fencing container " << id << ": " << reason;
    limitations->fence(id, reason);
  } catch (const std::exception& e) {
    LOG(ERROR) << "mesos-dvdi: fencing failed: " << e.what();
  } catch (...) {
    LOG(ERROR) << "mesos-dvdi: fencing failed";
  }
}

}  // namespace mesos_dvdi
