// The Mesos side of mesos-dvdi: the mesos::slave::Isolator class and the two module
// declarations the agent loads. It translates ContainerConfig into the bridge's plain data, hands
// each call to the core, which returns at once and answers later from its own bounded pool (an
// EBS attach can take minutes), and turns the answer into ContainerLaunchInfo. Translation only: every decision is the Rust core's. The watch
// promises live in watch.cpp, the /dvdi endpoints and dvdi/ metrics in endpoints.cpp.
//
// Built only when MESOS_PREFIX points at an installed Mesos (1.11 API), with -fabi-version=9 since
// it calls libprocess; see build.rs.

#include <sys/mount.h>
#include <sched.h>

#include <exception>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <glog/logging.h>

#include <mesos/mesos.hpp>
#include <mesos/module/isolator.hpp>
#include <mesos/slave/containerizer.hpp>
#include <mesos/slave/isolator.hpp>

#include <process/future.hpp>

#include <stout/hashset.hpp>
#include <stout/nothing.hpp>
#include <stout/option.hpp>

#include "mesos-dvdi/cpp/endpoints.h"
#include "mesos-dvdi/cpp/shim.h"
#include "mesos-dvdi/cpp/watch.h"

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

rust::Vec<CsiSecret> secrets(const google::protobuf::Map<std::string, mesos::Secret>& given) {
  rust::Vec<CsiSecret> out;
  for (const auto& entry : given) {
    CsiSecret secret;
    secret.key = entry.first;
    secret.kind = entry.second.has_type() ? static_cast<int32_t>(entry.second.type()) : 0;
    if (entry.second.has_value()) secret.value = bytes(entry.second.value().data());
    if (entry.second.has_reference()) secret.reference = entry.second.reference().name();
    out.push_back(std::move(secret));
  }
  return out;
}

// A CSI_VOLUME as Mesos 1.11 gives it; the Rust core validates it (and refuses what it cannot
// use, such as a REFERENCE secret).
CsiVolume translateCsi(const mesos::Volume& volume, uint64_t index) {
  const mesos::Volume::Source::CSIVolume& csi = volume.source().csi_volume();
  CsiVolume out;
  out.index = index;
  out.plugin_name = csi.plugin_name();
  out.has_static_provisioning = csi.has_static_provisioning();
  out.block = false;
  out.access_mode = 0;
  if (csi.has_static_provisioning()) {
    const auto& sp = csi.static_provisioning();
    out.volume_id = sp.volume_id();
    const auto& capability = sp.volume_capability();
    out.block = capability.has_block();
    if (capability.has_mount()) {
      out.fs_type = capability.mount().fs_type();
      for (const std::string& flag : capability.mount().mount_flags()) {
        out.mount_flags.push_back(flag);
      }
    }
    out.access_mode =
        capability.has_access_mode() ? static_cast<int32_t>(capability.access_mode().mode()) : 0;
    for (const auto& entry : sp.volume_context()) {
      Param param;
      param.key = entry.first;
      param.value = entry.second;
      out.volume_context.push_back(std::move(param));
    }
    out.node_stage_secrets = secrets(sp.node_stage_secrets());
    out.node_publish_secrets = secrets(sp.node_publish_secrets());
  }
  out.container_path = volume.container_path();
  out.read_only = volume.mode() == mesos::Volume::RO;
  return out;
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
    uint64_t index = 0;
    for (const mesos::Volume& volume : config.container_info().volumes()) {
      const uint64_t position = index++;
      if (volume.has_source() && volume.source().type() == mesos::Volume::Source::CSI_VOLUME) {
        request.csi_volumes.push_back(translateCsi(volume, position));
        continue;
      }
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

// Recover's answer: its problems to the agent's log (the core logs the summary).
class RecoverAnswer : public RecoverDone {
public:
  process::Future<Nothing> future() const { return answer.future(); }

  void recovered(const RecoverSummary& summary) const override {
    try {
      for (const rust::String& e : summary.errors) {
        LOG(WARNING) << "mesos-dvdi: recover: " << text(e);
      }
    } catch (...) {
      // Only the log lines are lost.
    }
    answer.set(Nothing());
  }

  void failed(rust::Str message) const override { answer.fail(message); }

private:
  Answer<Nothing> answer;
};

// Prepare's answer: the launch plan as ContainerLaunchInfo.
class PrepareAnswer : public PrepareDone {
public:
  explicit PrepareAnswer(std::string id) : id(std::move(id)) {}

  process::Future<Option<mesos::slave::ContainerLaunchInfo>> future() const {
    return answer.future();
  }

  void prepared(const Launch& plan) const override {
    try {
      for (const rust::String& w : plan.warnings) {
        LOG(WARNING) << "mesos-dvdi: container " << id << ": " << text(w);
      }
      if (plan.mounts.empty()) {
        answer.set(None());
        return;
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
      answer.set(launch);
    } catch (const std::exception& e) {
      answer.fail(e.what());
    } catch (...) {
      answer.fail("mesos-dvdi: translating the launch plan failed");
    }
  }

  void failed(rust::Str message) const override { answer.fail(message); }

private:
  const std::string id;
  Answer<Option<mesos::slave::ContainerLaunchInfo>> answer;
};

// Cleanup's answer. The container's watch entry goes when the core's cleanup has ended, whatever
// its outcome, before the containerizer hears of it (and, should the core never answer, when
// this is destroyed).
class CleanupAnswer : public CleanupDone {
public:
  CleanupAnswer(std::shared_ptr<Limitations> limitations, std::string id)
    : limitations(std::move(limitations)), id(std::move(id)) {}

  ~CleanupAnswer() override { forget(); }

  process::Future<Nothing> future() const { return answer.future(); }

  void cleaned_up() const override {
    forget();
    answer.set(Nothing());
  }

  void failed(rust::Str message) const override {
    forget();
    answer.fail(message);
  }

private:
  void forget() const {
    try {
      limitations->forget(id);
    } catch (...) {
      LOG(ERROR) << "mesos-dvdi: container " << id << ": dropping its watch entry failed";
    }
  }

  std::shared_ptr<Limitations> limitations;
  const std::string id;
  Answer<Nothing> answer;
};

class DvdiIsolator : public mesos::slave::Isolator {
public:
  explicit DvdiIsolator(rust::Box<IsolatorCore> core)
    : core(std::make_shared<rust::Box<IsolatorCore>>(std::move(core))),
      limitations(std::make_shared<Limitations>()),
      endpoints(this->core) {
    (*this->core)->set_fence_sink(std::unique_ptr<FenceSink>(new PromiseFenceSink(limitations)));
  }

  bool supportsNesting() override { return true; }
  bool supportsStandalone() override { return true; }

  process::Future<Nothing> recover(
      const std::vector<mesos::slave::ContainerState>& states,
      const hashset<mesos::ContainerID>& orphans) override {
    rust::Vec<rust::String> known, orphaned;
    for (const mesos::slave::ContainerState& state : states) {
      const std::string id = containerName(state.container_id());
      // Recover may fence it; the containerizer asks for its future afterwards. (Orphans get
      // none: the containerizer destroys them without watching.)
      limitations->open(id);
      known.push_back(id);
    }
    for (const mesos::ContainerID& id : orphans) {
      orphaned.push_back(containerName(id));
    }
    std::unique_ptr<RecoverAnswer> done(new RecoverAnswer());
    process::Future<Nothing> future = done->future();
    (*core)->start_recover(known, orphaned, std::move(done));
    return future;
  }

  process::Future<Option<mesos::slave::ContainerLaunchInfo>> prepare(
      const mesos::ContainerID& containerId,
      const mesos::slave::ContainerConfig& containerConfig) override {
    const std::string id = containerName(containerId);
    // A lease may be lost as soon as prepare takes it, before the containerizer asks for the
    // future.
    limitations->open(id);
    std::unique_ptr<PrepareAnswer> done(new PrepareAnswer(id));
    process::Future<Option<mesos::slave::ContainerLaunchInfo>> future = done->future();
    (*core)->start_prepare(id, translate(containerConfig), std::move(done));
    return future;
  }

  // Completes only when the core fences the container (a lease its volumes need was lost).
  process::Future<mesos::slave::ContainerLimitation> watch(
      const mesos::ContainerID& containerId) override {
    return limitations->watch(containerName(containerId));
  }

  process::Future<Nothing> cleanup(const mesos::ContainerID& containerId) override {
    const std::string id = containerName(containerId);
    // The container is being destroyed: nothing more to fence, whatever cleanup says. Its entry
    // goes when the core's cleanup has ended (see CleanupAnswer), so a fence during it cannot
    // make a new one.
    limitations->cleaning(id);
    std::unique_ptr<CleanupAnswer> done(new CleanupAnswer(limitations, id));
    process::Future<Nothing> future = done->future();
    (*core)->start_cleanup(id, std::move(done));
    return future;
  }

private:
  // Shared with the endpoints and their gauges.
  SharedCore core;
  std::shared_ptr<Limitations> limitations;
  // Declared last, so destroyed first: the gauges and the process leave the agent before the
  // rest of the isolator goes.
  Endpoints endpoints;
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
