// The module's face on the agent's own port: the libprocess process `dvdi` serving the Rust
// core's JSON at /dvdi/volumes and /dvdi/health, and a `dvdi/...` metric gauge per core count.
// Published once per agent: a second instance (the module loaded twice) publishes nothing.
// Mesos builds only; see build.rs.
#pragma once

#include <memory>
#include <vector>

#include <process/metrics/pull_gauge.hpp>

#include "mesos-dvdi/cpp/shim.h"

namespace mesos_dvdi {

class DvdiProcess;

// Owns what it published, and takes back exactly that.
class Endpoints {
public:
  // Asks the core for its metrics first (throwing its error before anything is published), then
  // spawns the process and adds the gauges, unless a process named dvdi exists already.
  explicit Endpoints(SharedCore core);

  // Removes the gauges before the process and the core they read go away.
  ~Endpoints();

  Endpoints(const Endpoints&) = delete;
  Endpoints& operator=(const Endpoints&) = delete;

private:
  std::unique_ptr<DvdiProcess> server;
  bool spawned = false;
  std::vector<process::metrics::PullGauge> gauges;
};

}  // namespace mesos_dvdi
