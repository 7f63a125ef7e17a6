// The watch promises (see watch.h): the FenceSink that completes a container's watch() future
// when the Rust core fences it, and says so when there is no future to complete.

#include "mesos-dvdi/cpp/watch.h"

#include <exception>
#include <string>

#include <glog/logging.h>

#include <mesos/mesos.hpp>

namespace mesos_dvdi {

void PromiseFenceSink::fence(rust::Str container_id, rust::Str message) const {
  try {
    const std::string id(container_id.data(), container_id.size());
    mesos::slave::ContainerLimitation limitation;
    limitation.set_message(std::string(message.data(), message.size()));
    limitation.set_reason(mesos::TaskStatus::REASON_CONTAINER_LIMITATION);
    // The core has logged the fence and its reason already.
    switch (limitations->fence(id, limitation)) {
      case FenceOutcome::kCompleted:
        break;
      case FenceOutcome::kUnknown:
        LOG(INFO) << "mesos-dvdi: container " << id << " is not one this agent's Mesos "
                  << "prepared, recovered or watches (a `dvdi run` command's, or cleaned up "
                  << "already): nothing for Mesos to stop";
        break;
      case FenceOutcome::kCleaningUp:
        LOG(INFO) << "mesos-dvdi: container " << id << " is being cleaned up: nothing more "
                  << "for Mesos to stop";
        break;
    }
  } catch (const std::exception& e) {
    LOG(ERROR) << "mesos-dvdi: fencing failed: " << e.what();
  } catch (...) {
    LOG(ERROR) << "mesos-dvdi: fencing failed";
  }
}

}  // namespace mesos_dvdi
