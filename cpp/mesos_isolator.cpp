// The Mesos side of mesos-dvdi: a mesos::slave::Isolator that translates ContainerConfig into the
// bridge's plain data, runs each bridge call off the libprocess thread (an EBS attach can take
// minutes), and turns the answer into ContainerLaunchInfo. It also serves the core's state on the
// agent's own port (a libprocess process `dvdi`: GET /dvdi/volumes and /dvdi/health) and
// publishes the core's counts as `dvdi/...` metrics. Translation only: every decision, every JSON
// document and every count is the Rust core's.
//
// Built only when MESOS_PREFIX points at an installed Mesos (1.11 API), with -fabi-version=9 since
// it calls libprocess; see build.rs.

#include <sys/mount.h>
#include <sched.h>

#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <glog/logging.h>

#include <mesos/mesos.hpp>
#include <mesos/module/isolator.hpp>
#include <mesos/slave/containerizer.hpp>
#include <mesos/slave/isolator.hpp>

#include <process/future.hpp>
#include <process/http.hpp>
#include <process/metrics/metrics.hpp>
#include <process/metrics/pull_gauge.hpp>
#include <process/process.hpp>

#include <stout/hashset.hpp>
#include <stout/nothing.hpp>
#include <stout/option.hpp>
#include <stout/try.hpp>

#include "mesos-dvdi/src/ffi.rs.h"

namespace mesos_dvdi {

namespace {

// The agent's log.
class GlogSink : public LogSink {
public:
  void log(uint8_t level, rust::Str message) const override {
    const std::string text(message.data(), message.size());
    if (level <= 1) {
      LOG(ERROR) << text;
    } else if (level == 2) {
      LOG(WARNING) << text;
    } else {
      LOG(INFO) << text;
    }
  }
};

// Each container's watch() future, completed only to fence it. The core decides when (a lease
// its volumes depend on was lost) and says why; this table only keeps the promises. A fence may
// come before the containerizer asks for the future (recover fences before watch is called for
// recovered containers), so either side creates the entry.
class Limitations {
public:
  process::Future<mesos::slave::ContainerLimitation> watch(const std::string& id) {
    std::lock_guard<std::mutex> lock(mutex);
    return promise(id)->future();
  }

  void fence(const std::string& id, const std::string& message) {
    mesos::slave::ContainerLimitation limitation;
    limitation.set_message(message);
    limitation.set_reason(mesos::TaskStatus::REASON_CONTAINER_LIMITATION);
    std::lock_guard<std::mutex> lock(mutex);
    promise(id)->set(limitation);
  }

  // The container is gone: its promise is dropped, never failed or discarded (a failed watch
  // future would destroy a container).
  void forget(const std::string& id) {
    std::lock_guard<std::mutex> lock(mutex);
    promises.erase(id);
  }

private:
  std::shared_ptr<process::Promise<mesos::slave::ContainerLimitation>> promise(
      const std::string& id) {
    std::shared_ptr<process::Promise<mesos::slave::ContainerLimitation>>& p = promises[id];
    if (!p) p.reset(new process::Promise<mesos::slave::ContainerLimitation>());
    return p;
  }

  std::mutex mutex;
  std::map<std::string, std::shared_ptr<process::Promise<mesos::slave::ContainerLimitation>>>
      promises;
};

class PromiseFenceSink : public FenceSink {
public:
  explicit PromiseFenceSink(std::shared_ptr<Limitations> limitations)
    : limitations(std::move(limitations)) {}

  // Called from Rust, which cannot take a C++ exception: nothing may escape.
  void fence(rust::Str container_id, rust::Str message) const override {
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

private:
  std::shared_ptr<Limitations> limitations;
};
// A rust::String's text. Never through its conversion operator: compiled with -fabi-version=9
// (see build.rs) its name carries an [abi:cxx11] tag that the cxx library, built with today's
// ABI, does not define, and the agent would refuse the module with an undefined symbol.
std::string text(const rust::String& s) { return std::string(s.data(), s.size()); }

// "parent.child" for nested containers, as Mesos prints them.
std::string containerName(const mesos::ContainerID& id) {
  return id.has_parent() ? containerName(id.parent()) + "." + id.value() : id.value();
}

rust::Vec<uint8_t> bytes(const std::string& s) {
  rust::Vec<uint8_t> out;
  out.reserve(s.size());
  for (char c : s) out.push_back(static_cast<uint8_t>(c));
  return out;
}

// Runs `work` on a thread of its own and completes the future with its result; a C++ exception
// (rust::Error included) fails the future with its message.
template <typename T, typename F>
process::Future<T> offload(F work) {
  std::shared_ptr<process::Promise<T>> promise(new process::Promise<T>());
  process::Future<T> future = promise->future();
  std::thread([promise, work]() {
    try {
      promise->set(work());
    } catch (const std::exception& e) {
      promise->fail(e.what());
    }
  }).detach();
  return future;
}

ContainerRequest translate(const mesos::slave::ContainerConfig& config) {
  ContainerRequest request;
  // The task's environment when the container runs a task, else the executor's.
  const mesos::Environment* env = nullptr;
  if (config.has_task_info() && config.task_info().has_command() &&
      config.task_info().command().has_environment()) {
    env = &config.task_info().command().environment();
  } else if (config.has_command_info() && config.command_info().has_environment()) {
    env = &config.command_info().environment();
  }
  if (env != nullptr) {
    for (const mesos::Environment::Variable& v : env->variables()) {
      // Secrets are not volume settings; their values never reach this module.
      if (v.has_type() && v.type() != mesos::Environment::Variable::VALUE) continue;
      EnvVar var;
      var.name = bytes(v.name());
      var.value = bytes(v.value());
      request.env.push_back(std::move(var));
    }
  }
  if (config.has_container_info()) {
    for (const mesos::Volume& volume : config.container_info().volumes()) {
      if (!volume.has_source() || volume.source().type() != mesos::Volume::Source::DOCKER_VOLUME) {
        continue;
      }
      const mesos::Volume::Source::DockerVolume& dv = volume.source().docker_volume();
      DockerVolume out;
      out.driver = dv.has_driver() ? dv.driver() : "";
      out.name = dv.name();
      if (dv.has_driver_options()) {
        for (const mesos::Parameter& p : dv.driver_options().parameter()) {
          Param param;
          param.key = p.key();
          param.value = p.value();
          out.options.push_back(std::move(param));
        }
      }
      out.container_path = volume.container_path();
      out.read_only = volume.mode() == mesos::Volume::RO;
      request.docker_volumes.push_back(std::move(out));
    }
  }
  request.sandbox = config.directory();
  request.rootfs = config.has_rootfs() ? config.rootfs() : "";
  request.user = config.has_user() ? config.user() : "";
  return request;
}

// The agent authenticates its read-only endpoints under this realm (defined inside Mesos, not in
// its public headers); libprocess lets a route through when no authenticator is installed for it,
// so these endpoints are protected exactly when the agent's read-only ones are.
const char READONLY_REALM[] = "mesos-agent-readonly";

process::http::Response jsonResponse(process::http::Response response) {
  response.headers["Content-Type"] = "application/json";
  return response;
}

// Serves the core's JSON at /dvdi/volumes and /dvdi/health on the agent's port.
class DvdiProcess : public process::Process<DvdiProcess> {
public:
  explicit DvdiProcess(std::shared_ptr<rust::Box<IsolatorCore>> core)
    : process::ProcessBase("dvdi"), core(std::move(core)) {}

protected:
  void initialize() override {
    route("/volumes",
          READONLY_REALM,
          std::string("The volumes mesos-dvdi has mounted on this agent, who uses each, and the "
                      "records or legacy checkpoints it cannot read: the JSON of `dvdi status "
                      "--json`."),
          &DvdiProcess::volumes);
    route("/health",
          READONLY_REALM,
          std::string("mesos-dvdi's health: 200 with {\"ok\": true, ...}, or 503 with the "
                      "unreadable records and failing volumes (and the recent problems)."),
          &DvdiProcess::health);
  }

private:
  // Both read the checkpoint directory: off the libprocess thread, like every bridge call.
  process::Future<process::http::Response> volumes(
      const process::http::Request&,
      const Option<process::http::authentication::Principal>&) {
    std::shared_ptr<rust::Box<IsolatorCore>> core = this->core;
    return offload<process::http::Response>([core]() -> process::http::Response {
      try {
        return jsonResponse(process::http::OK(text((*core)->status_json())));
      } catch (const std::exception& e) {
        return process::http::InternalServerError(e.what());
      }
    });
  }

  process::Future<process::http::Response> health(
      const process::http::Request&,
      const Option<process::http::authentication::Principal>&) {
    std::shared_ptr<rust::Box<IsolatorCore>> core = this->core;
    return offload<process::http::Response>([core]() -> process::http::Response {
      try {
        Health h = (*core)->health();
        const std::string body = text(h.json);
        return jsonResponse(
            h.ok ? process::http::Response(process::http::OK(body))
                 : process::http::Response(process::http::ServiceUnavailable(body)));
      } catch (const std::exception& e) {
        return process::http::InternalServerError(e.what());
      }
    });
  }

  std::shared_ptr<rust::Box<IsolatorCore>> core;
};

// One metric's value, asked of the core when /metrics/snapshot is read (the core owns the count,
// so there is no second bookkeeping here).
process::Future<double> metricValue(
    const std::shared_ptr<rust::Box<IsolatorCore>>& core, const std::string& name) {
  try {
    for (const Metric& m : (*core)->metrics()) {
      if (text(m.name) == name) return m.value;
    }
    return process::Failure("mesos-dvdi has no metric " + name);
  } catch (const std::exception& e) {
    return process::Failure(e.what());
  }
}

class DvdiIsolator : public mesos::slave::Isolator {
public:
  explicit DvdiIsolator(rust::Box<IsolatorCore> core)
    : core(std::make_shared<rust::Box<IsolatorCore>>(std::move(core))),
      limitations(std::make_shared<Limitations>()),
      endpoints(new DvdiProcess(this->core)) {
    (*this->core)->set_fence_sink(std::unique_ptr<FenceSink>(new PromiseFenceSink(limitations)));
    // Ask the core for its metrics before spawning: if that throws, nothing is running yet.
    std::shared_ptr<rust::Box<IsolatorCore>> shared = this->core;
    std::vector<process::metrics::PullGauge> all;
    for (const Metric& m : (*shared)->metrics()) {
      const std::string name = text(m.name);
      all.push_back(process::metrics::PullGauge(
          name, [shared, name]() { return metricValue(shared, name); }));
    }
    // The process id and the metric names are the agent's one namespace: a second instance
    // (the module loaded twice) must neither serve nor add, nor later remove what the first
    // one added.
    spawned = static_cast<bool>(process::spawn(endpoints.get()));
    if (!spawned) {
      LOG(WARNING) << "mesos-dvdi: the /dvdi endpoints and dvdi/ metrics are not published: a "
                   << "libprocess process named dvdi exists already (is the module loaded twice?)";
      return;
    }
    for (const process::metrics::PullGauge& gauge : all) {
      process::metrics::add(gauge);
    }
    gauges = all;
  }

  ~DvdiIsolator() override {
    if (!spawned) return;
    // The gauges hold the core themselves, so a read racing this still finds it.
    for (const process::metrics::PullGauge& gauge : gauges) {
      process::metrics::remove(gauge);
    }
    process::terminate(endpoints.get());
    process::wait(endpoints.get());
  }

  bool supportsNesting() override { return true; }
  bool supportsStandalone() override { return true; }

  process::Future<Nothing> recover(
      const std::vector<mesos::slave::ContainerState>& states,
      const hashset<mesos::ContainerID>& orphans) override {
    rust::Vec<rust::String> known, orphaned;
    for (const mesos::slave::ContainerState& state : states) {
      known.push_back(containerName(state.container_id()));
    }
    for (const mesos::ContainerID& id : orphans) {
      orphaned.push_back(containerName(id));
    }
    std::shared_ptr<rust::Box<IsolatorCore>> core = this->core;
    return offload<Nothing>([core, known, orphaned]() {
      // The core logs the summary; each problem that did not stop recovery goes here.
      RecoverSummary summary = (*core)->recover(known, orphaned);
      for (const rust::String& e : summary.errors) {
        LOG(WARNING) << "mesos-dvdi: recover: " << text(e);
      }
      return Nothing();
    });
  }

  process::Future<Option<mesos::slave::ContainerLaunchInfo>> prepare(
      const mesos::ContainerID& containerId,
      const mesos::slave::ContainerConfig& containerConfig) override {
    const std::string id = containerName(containerId);
    std::shared_ptr<ContainerRequest> request =
        std::make_shared<ContainerRequest>(translate(containerConfig));
    std::shared_ptr<rust::Box<IsolatorCore>> core = this->core;
    return offload<Option<mesos::slave::ContainerLaunchInfo>>(
        [core, id, request]() -> Option<mesos::slave::ContainerLaunchInfo> {
          Launch plan = (*core)->prepare(id, *request);
          for (const rust::String& w : plan.warnings) {
            LOG(WARNING) << "mesos-dvdi: container " << id << ": " << text(w);
          }
          if (plan.mounts.empty()) {
            return None();
          }
          mesos::slave::ContainerLaunchInfo launch;
          for (const BindMount& m : plan.mounts) {
            mesos::slave::ContainerMountInfo* mount = launch.add_mounts();
            mount->set_source(text(m.source));
            mount->set_target(text(m.target));
            mount->set_flags(MS_BIND | MS_REC | (m.read_only ? MS_RDONLY : 0));
          }
          if (plan.new_mount_namespace) {
            launch.add_clone_namespaces(CLONE_NEWNS);
          }
          return launch;
        });
  }

  // Completes only when the core fences the container (a lease its volumes need was lost).
  process::Future<mesos::slave::ContainerLimitation> watch(
      const mesos::ContainerID& containerId) override {
    return limitations->watch(containerName(containerId));
  }

  process::Future<Nothing> cleanup(const mesos::ContainerID& containerId) override {
    const std::string id = containerName(containerId);
    std::shared_ptr<rust::Box<IsolatorCore>> core = this->core;
    std::shared_ptr<Limitations> limitations = this->limitations;
    return offload<Nothing>([core, limitations, id]() {
      // The container is being destroyed: nothing more to fence, whatever cleanup says.
      limitations->forget(id);
      (*core)->cleanup(id);
      return Nothing();
    });
  }

private:
  // Shared with the worker threads, which may outlive a call's future, and with the endpoints.
  std::shared_ptr<rust::Box<IsolatorCore>> core;
  std::shared_ptr<Limitations> limitations;
  std::unique_ptr<DvdiProcess> endpoints;
  bool spawned = false;
  std::vector<process::metrics::PullGauge> gauges;
};

mesos::slave::Isolator* createIsolator(
    const char* module, const mesos::Parameters& parameters) {
  try {
    set_log_sink(std::unique_ptr<LogSink>(new GlogSink()));
    rust::Vec<Param> params;
    for (const mesos::Parameter& p : parameters.parameter()) {
      Param param;
      param.key = p.key();
      param.value = p.value();
      params.push_back(std::move(param));
    }
    return new DvdiIsolator(create(module, params));
  } catch (const std::exception& e) {
    LOG(ERROR) << e.what();
    return nullptr;
  }
}

// The module's two names read their parameters differently (see config.rs): each factory says
// which one the agent loaded.
mesos::slave::Isolator* createDvdiIsolator(const mesos::Parameters& parameters) {
  return createIsolator("org_apache_mesos_DvdiIsolator", parameters);
}

mesos::slave::Isolator* createLegacyIsolator(const mesos::Parameters& parameters) {
  return createIsolator("com_emccode_mesos_DockerVolumeDriverIsolator", parameters);
}

}  // namespace

}  // namespace mesos_dvdi

// The module, under its own name and under the original module's (a drop-in for
// com_emccode_mesos_DockerVolumeDriverIsolator).
mesos::modules::Module<mesos::slave::Isolator> org_apache_mesos_DvdiIsolator(
    MESOS_MODULE_API_VERSION,
    MESOS_VERSION,
    "mesos-dvdi",
    "mesos-dvdi@users.noreply.github.com",
    "External persistent volumes through Docker volume plugins, dvdcli, local and loop drivers.",
    nullptr,
    mesos_dvdi::createDvdiIsolator);

mesos::modules::Module<mesos::slave::Isolator> com_emccode_mesos_DockerVolumeDriverIsolator(
    MESOS_MODULE_API_VERSION,
    MESOS_VERSION,
    "mesos-dvdi",
    "mesos-dvdi@users.noreply.github.com",
    "mesos-dvdi, under the name of the module it replaces.",
    nullptr,
    mesos_dvdi::createLegacyIsolator);
