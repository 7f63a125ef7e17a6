// Which containers have a watch() promise, and the rules that keep that table from growing: an
// entry exists only for a container this agent's Mesos has prepared, recovered or asked to watch,
// and only until its cleanup ends. Standard C++ only (the promise is a template parameter), so the
// C++ harness checks these rules without Mesos; the shim instantiates it with libprocess' Promise
// (see watch.h).
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

namespace mesos_dvdi {

// What became of one fence.
enum class FenceOutcome {
  // The container's watch() future now carries the limitation.
  kCompleted,
  // Not a container of this agent's Mesos (a `dvdi run` command's, say), or one cleaned up
  // already: nothing to complete, and nothing is added.
  kUnknown,
  // The container's cleanup has begun: it is being destroyed anyway.
  kCleaningUp,
};

// `Promise` needs a default constructor, `future()` and `set(value)`, each safe to call from any
// thread (libprocess' Promise is).
template <typename Promise>
class WatchTable {
public:
  // The container is live in this module (Mesos prepares or recovers it): from now on a fence for
  // it completes its watch() future, even one Mesos has not asked for yet (recover fences before
  // the containerizer calls watch for the containers it recovered).
  void open(const std::string& id) {
    std::lock_guard<std::mutex> lock(mutex);
    entries[id];
  }

  // Mesos asks for the container's future (its entry is made if need be: Mesos asked).
  auto watch(const std::string& id) -> decltype(std::declval<Promise&>().future()) {
    std::lock_guard<std::mutex> lock(mutex);
    return entries[id].promise->future();
  }

  // Completes the container's future with `limitation`, if it has an entry that is not being
  // cleaned up; never adds one.
  template <typename Limitation>
  FenceOutcome fence(const std::string& id, const Limitation& limitation) {
    std::shared_ptr<Promise> promise;
    {
      std::lock_guard<std::mutex> lock(mutex);
      auto it = entries.find(id);
      if (it == entries.end()) return FenceOutcome::kUnknown;
      if (it->second.cleaning) return FenceOutcome::kCleaningUp;
      promise = it->second.promise;
    }
    // Outside the lock: completing a future runs its callbacks.
    promise->set(limitation);
    return FenceOutcome::kCompleted;
  }

  // The container's cleanup begins: fences for it are dropped from now on.
  void cleaning(const std::string& id) {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = entries.find(id);
    if (it != entries.end()) it->second.cleaning = true;
  }

  // The container's cleanup has ended (done or failed): its promise is let go, never failed or
  // discarded (a failed watch future would make the containerizer destroy the container; the
  // future of a promise let go stays pending: libprocess marks it abandoned, which runs no onAny
  // callback).
  void forget(const std::string& id) {
    std::lock_guard<std::mutex> lock(mutex);
    entries.erase(id);
  }

  // How many containers have an entry.
  std::size_t size() const {
    std::lock_guard<std::mutex> lock(mutex);
    return entries.size();
  }

private:
  struct Entry {
    std::shared_ptr<Promise> promise = std::make_shared<Promise>();
    bool cleaning = false;
  };

  mutable std::mutex mutex;
  std::map<std::string, Entry> entries;
};

}  // namespace mesos_dvdi
