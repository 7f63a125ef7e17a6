// Plays the Mesos agent through the same bridge calls the isolator shim makes: create with module
// parameters, prepare containers (environment form and DOCKER_VOLUME form, one with a rootfs),
// carry out each launch plan the way the Mesos launcher does (fork, unshare CLONE_NEWNS, make /
// rslave, the binds, exec a command that writes into the volume), clean up, restart (a new
// isolator) and recover with one container live and one orphaned. Between, it reads the core's
// status and health JSON (written to DIR/status.json and DIR/health.json for the caller to parse)
// and its metrics, as the shim's endpoints and gauges do; last, it loads the module under the
// original module's name with an old modules.json's parameters and recovers what the original's
// checkpoint (DIR/agent/meta/dvdimounts.pb, written by the caller) held.
//
// Every call that may block goes through the bridge as the shim makes it: start_recover,
// start_prepare, start_cleanup, start_status_json and start_health return at once and the core
// answers each through its completion from a thread of its own bounded pool (the harness's
// completions stand in for libprocess promises, and check that each is answered exactly once).
// A scenario with one call thread and a plugin that never answers a volume call (a test double)
// checks that a call which cannot start before its deadline is answered with the pool-full
// message.
// It also plays a task user who owns its sandbox (as Mesos makes it) swapping the entry prepare
// checked for a symbolic link before the launcher binds: the bind must not follow the link.
//
// With a ZooKeeper address, it then plays two agents leasing one volume: agent A prepares it, is
// restarted while agent B takes the volume, and A's recover fences A's container through the
// fence sink with a message naming B. The sink hands each fence to the shim's own watch table
// (cpp/watch_table.h, with a stand-in for libprocess' Promise), driven as the shim drives it, and
// checks that the table keeps no entry after a fence during cleanup, a fence after it, or a fence
// for a container Mesos never gave.
//
// With DVDI_HARNESS_CSI_CONFIG (a CSI plugin configuration directory) and DVDI_HARNESS_CSI_VOLUME
// (the id of a volume that plugin has) in its environment, it sends a CSI_VOLUME entry through the
// bridge, with VALUE secrets, mount flags and a volume context, writes through its bind and cleans
// up; then one with a REFERENCE secret, which must be refused naming it. The caller checks what the
// plugin saw.
//
// Usage: harness DIR PLUGIN_DIR SOURCE [ZK_HOST:PORT]
//   DIR: an empty scratch directory; PLUGIN_DIR: where a running docker-volume-easyfuse plugin
//   has its easyfuse.sock; SOURCE: a directory that plugin's bindfs volume mirrors.
// Run as root in a private mount namespace. Exits 0 when every check passes; prints the failed
// check otherwise.

#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <sched.h>
#include <unistd.h>

#include <sys/socket.h>
#include <sys/un.h>

#include <cctype>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <utility>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "mesos-dvdi/cpp/completion.h"
#include "mesos-dvdi/cpp/watch_table.h"
#include "mesos-dvdi/src/ffi.rs.h"
#include "rust/cxx.h"

using namespace mesos_dvdi;

namespace {

int failures = 0;

#define CHECK(cond, what)                                                        \
  do {                                                                           \
    if (!(cond)) {                                                               \
      std::cerr << "harness: FAILED: " << what << " (" #cond ", line "           \
                << __LINE__ << ")" << std::endl;                                 \
      ++failures;                                                                \
    }                                                                            \
  } while (0)

class StderrSink : public LogSink {
public:
  void log(uint8_t level, rust::Str message) const override {
    std::cerr << "[log " << int(level) << "] " << std::string(message) << std::endl;
  }
};

// A stand-in for libprocess' Promise<ContainerLimitation> (the harness has no Mesos): its future
// is a cell that set() fills.
class StandInPromise {
public:
  struct Cell {
    std::mutex mutex;
    bool set = false;
    std::string limitation;
  };

  std::shared_ptr<Cell> future() const { return cell; }

  void set(const std::string& limitation) {
    std::lock_guard<std::mutex> lock(cell->mutex);
    cell->set = true;
    cell->limitation = limitation;
  }

private:
  std::shared_ptr<Cell> cell = std::make_shared<Cell>();
};

// The shim's watch table, as one agent's isolator holds it.
using Watches = WatchTable<StandInPromise>;

// Records what the core fences, and hands it to the agent's watch table as the shim's
// PromiseFenceSink does.
struct Fenced {
  std::mutex mutex;
  std::vector<std::pair<std::string, std::string>> calls;
  std::vector<FenceOutcome> outcomes;
};

class RecordingFenceSink : public FenceSink {
public:
  RecordingFenceSink(std::shared_ptr<Fenced> fenced, std::shared_ptr<Watches> watches)
    : fenced(std::move(fenced)), watches(std::move(watches)) {}
  void fence(rust::Str container_id, rust::Str message) const override {
    std::lock_guard<std::mutex> lock(fenced->mutex);
    fenced->calls.emplace_back(std::string(container_id), std::string(message));
    fenced->outcomes.push_back(
        watches->fence(std::string(container_id), std::string(message)));
  }

private:
  std::shared_ptr<Fenced> fenced;
  std::shared_ptr<Watches> watches;
};

// A call's outcome, as the harness waits for it: the stand-in for a libprocess future. Counts the
// answers, which must be exactly one.
template <typename T>
class Cell {
public:
  void set(const T& v) {
    std::lock_guard<std::mutex> lock(mutex);
    ++answers;
    if (done) return;
    value = v;
    ok = done = true;
    cv.notify_all();
  }

  void fail(const std::string& message, bool answer = true) {
    std::lock_guard<std::mutex> lock(mutex);
    if (answer) ++answers;
    if (done) return;
    error = message;
    done = true;
    cv.notify_all();
  }

  // Waits for the answer; a failure is thrown as std::runtime_error with its message.
  T get() {
    std::unique_lock<std::mutex> lock(mutex);
    cv.wait(lock, [this] { return done; });
    if (!ok) throw std::runtime_error(error);
    return value;
  }

  bool ready() {
    std::lock_guard<std::mutex> lock(mutex);
    return done;
  }

  int answered() {
    std::lock_guard<std::mutex> lock(mutex);
    return answers;
  }

private:
  std::mutex mutex;
  std::condition_variable cv;
  bool done = false;
  bool ok = false;
  int answers = 0;
  T value{};
  std::string error;
};

// Each completion fails its cell when destroyed unanswered, as the shim's do (that failure is not
// counted as an answer: a core that drops a completion unanswered fails the harness's checks).
class CellRecoverDone : public RecoverDone {
public:
  explicit CellRecoverDone(std::shared_ptr<Cell<RecoverSummary>> cell) : cell(std::move(cell)) {}
  ~CellRecoverDone() override { cell->fail("recover ended without an answer", false); }
  void recovered(const RecoverSummary& summary) const override { cell->set(summary); }
  void failed(rust::Str message) const override { cell->fail(std::string(message)); }

private:
  std::shared_ptr<Cell<RecoverSummary>> cell;
};

class CellPrepareDone : public PrepareDone {
public:
  explicit CellPrepareDone(std::shared_ptr<Cell<Launch>> cell) : cell(std::move(cell)) {}
  ~CellPrepareDone() override { cell->fail("prepare ended without an answer", false); }
  void prepared(const Launch& launch) const override { cell->set(launch); }
  void failed(rust::Str message) const override { cell->fail(std::string(message)); }

private:
  std::shared_ptr<Cell<Launch>> cell;
};

class CellCleanupDone : public CleanupDone {
public:
  explicit CellCleanupDone(std::shared_ptr<Cell<bool>> cell) : cell(std::move(cell)) {}
  ~CellCleanupDone() override { cell->fail("cleanup ended without an answer", false); }
  void cleaned_up() const override { cell->set(true); }
  void failed(rust::Str message) const override { cell->fail(std::string(message)); }

private:
  std::shared_ptr<Cell<bool>> cell;
};

using Read = std::pair<bool, std::string>;

class CellReadDone : public ReadDone {
public:
  explicit CellReadDone(std::shared_ptr<Cell<Read>> cell) : cell(std::move(cell)) {}
  ~CellReadDone() override { cell->fail("the read ended without an answer", false); }
  void answered(bool ok, rust::Str body) const override { cell->set(Read(ok, std::string(body))); }
  void failed(rust::Str message) const override { cell->fail(std::string(message)); }

private:
  std::shared_ptr<Cell<Read>> cell;
};

// The calls as the shim makes them: started, then (unlike the shim, which returns the future)
// waited for. Each checks that its completion was answered exactly once.
template <typename T>
T answer(const std::shared_ptr<Cell<T>>& cell, const char* call) {
  try {
    T value = cell->get();
    CHECK(cell->answered() == 1, std::string(call) + " answered once");
    return value;
  } catch (...) {
    CHECK(cell->answered() == 1, std::string(call) + " answered once");
    throw;
  }
}

std::shared_ptr<Cell<Launch>> start_prepare(const IsolatorCore& iso, const std::string& id,
                                            const ContainerRequest& request) {
  std::shared_ptr<Cell<Launch>> cell = std::make_shared<Cell<Launch>>();
  iso.start_prepare(id, request, std::unique_ptr<PrepareDone>(new CellPrepareDone(cell)));
  return cell;
}

RecoverSummary recover(const IsolatorCore& iso, const rust::Vec<rust::String>& known,
                       const rust::Vec<rust::String>& orphans) {
  std::shared_ptr<Cell<RecoverSummary>> cell = std::make_shared<Cell<RecoverSummary>>();
  iso.start_recover(known, orphans, std::unique_ptr<RecoverDone>(new CellRecoverDone(cell)));
  return answer(cell, "recover");
}

Launch prepare(const IsolatorCore& iso, const std::string& id, const ContainerRequest& request) {
  return answer(start_prepare(iso, id, request), "prepare");
}

void cleanup(const IsolatorCore& iso, const std::string& id) {
  std::shared_ptr<Cell<bool>> cell = std::make_shared<Cell<bool>>();
  iso.start_cleanup(id, std::unique_ptr<CleanupDone>(new CellCleanupDone(cell)));
  answer(cell, "cleanup");
}

std::string status_json(const IsolatorCore& iso) {
  std::shared_ptr<Cell<Read>> cell = std::make_shared<Cell<Read>>();
  iso.start_status_json(std::unique_ptr<ReadDone>(new CellReadDone(cell)));
  return answer(cell, "status_json").second;
}

Read read_health(const IsolatorCore& iso) {
  std::shared_ptr<Cell<Read>> cell = std::make_shared<Cell<Read>>();
  iso.start_health(std::unique_ptr<ReadDone>(new CellReadDone(cell)));
  return answer(cell, "health");
}

EnvVar env(const std::string& name, const std::string& value) {
  EnvVar e;
  for (char c : name) e.name.push_back(static_cast<uint8_t>(c));
  for (char c : value) e.value.push_back(static_cast<uint8_t>(c));
  return e;
}

Param param(const std::string& k, const std::string& v) {
  Param p;
  p.key = k;
  p.value = v;
  return p;
}

rust::Box<IsolatorCore> make(const std::string& dir, const std::string& plugins) {
  rust::Vec<Param> params;
  params.push_back(param("work_dir", dir + "/work"));
  params.push_back(param("local_root", dir + "/local"));
  params.push_back(param("loop_root", dir + "/loop"));
  params.push_back(param("plugin_dirs", plugins));
  params.push_back(param("default_driver", "local"));
  return create("org_apache_mesos_DvdiIsolator", params);
}

double metric(const IsolatorCore& iso, const std::string& name) {
  for (const Metric& m : iso.metrics()) {
    if (std::string(m.name) == name) return m.value;
  }
  return -1;
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream f(path);
  f << text;
}

// What the Mesos launcher does with ContainerLaunchInfo.mounts, then runs `command` in there.
int launch(const Launch& plan, const std::string& command) {
  pid_t pid = fork();
  if (pid == 0) {
    if (plan.new_mount_namespace && unshare(CLONE_NEWNS) != 0) _exit(90);
    if (mount("none", "/", nullptr, MS_REC | MS_SLAVE, nullptr) != 0) _exit(91);
    for (const BindMount& m : plan.mounts) {
      std::string src(m.source), dst(m.target);
      if (mount(src.c_str(), dst.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0) _exit(92);
      if (m.read_only &&
          mount(src.c_str(), dst.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) != 0)
        _exit(93);
    }
    execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
    _exit(94);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

bool is_mount_root(const std::string& path) {
  std::ifstream mi("/proc/thread-self/mountinfo");
  std::string line;
  while (std::getline(mi, line)) {
    std::istringstream fields(line);
    std::string id, parent, dev, root, point;
    fields >> id >> parent >> dev >> root >> point;
    if (point == path) return true;
  }
  return false;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// Runs `step` in a child process as uid/gid 65534 (nobody); true when it returned true.
bool as_nobody(const std::function<bool()>& step) {
  pid_t pid = fork();
  if (pid == 0) {
    if (setgid(65534) != 0 || setuid(65534) != 0) _exit(2);
    _exit(step() ? 0 : 1);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// A task run as nobody, in a sandbox nobody owns (mode 0750, as Mesos makes it), asks for a
// volume at a sandbox-relative path; after prepare, nobody swaps that entry for a symbolic link
// to a directory of root's. The launcher's bind must not land there.
void swapped_target(IsolatorCore& iso, const std::string& dir) {
  const std::string sandbox = dir + "/sandbox-nobody";
  const std::string victim = dir + "/victim";
  mkdir(sandbox.c_str(), 0750);
  CHECK(chown(sandbox.c_str(), 65534, 65534) == 0, "the sandbox given to nobody");
  mkdir(victim.c_str(), 0755);
  write_file(victim + "/marker", "root's own");

  ContainerRequest c;
  DockerVolume dv;
  dv.driver = "local";
  dv.name = "swapped";
  dv.container_path = "data";
  c.docker_volumes.push_back(dv);
  c.sandbox = sandbox;
  c.user = "nobody";
  Launch p = prepare(iso, "c5", c);
  CHECK(p.mounts.size() == 1, "c5 has one bind");
  write_file(dir + "/local/swapped/from-volume", "the volume's");

  const std::string data = sandbox + "/data";
  CHECK(as_nobody([&] {
          return rename(data.c_str(), (data + ".moved").c_str()) == 0 &&
                 symlink(victim.c_str(), data.c_str()) == 0;
        }),
        "the task user swapped its sandbox's entry for a link");
  const std::string target = p.mounts.empty() ? "" : std::string(p.mounts[0].target);
  CHECK(launch(p, "test -f " + victim + "/marker && ! test -e " + victim + "/from-volume") == 0,
        "the bind followed the task's link onto " + victim + " (target " + target + ")");
  cleanup(iso, "c5");
}

CsiSecret csi_secret(const std::string& key, int32_t kind, const std::string& value,
                     const std::string& reference) {
  CsiSecret s;
  s.key = key;
  s.kind = kind;
  for (char c : value) s.value.push_back(static_cast<uint8_t>(c));
  s.reference = reference;
  return s;
}

// A CSI_VOLUME entry as the shim translates Mesos 1.11's Volume.Source.CSIVolume.
void csi_volume(const std::string& dir, const std::string& config, const std::string& id) {
  rust::Vec<Param> params;
  params.push_back(param("work_dir", dir + "/csi-work"));
  params.push_back(param("plugin_dirs", dir + "/no-plugins"));
  params.push_back(param("default_driver", "local"));
  params.push_back(param("csi_plugin_config_dir", config));
  rust::Box<IsolatorCore> iso = create("org_apache_mesos_DvdiIsolator", params);
  const std::string sandbox = dir + "/sandbox-csi";
  mkdir(sandbox.c_str(), 0755);

  CsiVolume v;
  v.index = 2;
  v.plugin_name = "hostpath.csi.k8s.io";
  v.has_static_provisioning = true;
  v.volume_id = id;
  v.block = false;
  v.fs_type = "ext4";
  v.mount_flags.push_back("noatime");
  v.access_mode = 1;  // SINGLE_NODE_WRITER
  v.volume_context.push_back(param("share", "projects"));
  v.node_stage_secrets.push_back(csi_secret("password", 2, "harness-stage-secret", ""));
  v.node_publish_secrets.push_back(csi_secret("token", 2, "harness-publish-secret", ""));
  v.container_path = "csi";
  v.read_only = false;
  ContainerRequest c;
  c.csi_volumes.push_back(v);
  c.sandbox = sandbox;
  Launch p = prepare(*iso, "c6", c);
  CHECK(p.mounts.size() == 1, "c6 has one bind");
  CHECK(launch(p, "echo via-csi > " + sandbox + "/csi/file") == 0, "c6 writes through the bind");
  cleanup(*iso, "c6");

  CsiVolume ref = v;
  ref.node_publish_secrets.clear();
  ref.node_publish_secrets.push_back(csi_secret("token", 1, "", "/secrets/nfs-token"));
  ContainerRequest r;
  r.csi_volumes.push_back(ref);
  r.sandbox = sandbox;
  try {
    prepare(*iso, "c7", r);
    CHECK(false, "a REFERENCE secret was accepted");
  } catch (const std::exception& e) {
    const std::string what = e.what();
    CHECK(what.find("node_publish_secrets[\"token\"]") != std::string::npos &&
              what.find("/secrets/nfs-token") != std::string::npos,
          "the error names the REFERENCE secret: " + what);
  }
}

// One agent of the fencing scenario: a leased `local` volume on storage both agents see.
rust::Box<IsolatorCore> agent(const std::string& dir, const std::string& name,
                              const std::string& zk) {
  rust::Vec<Param> params;
  params.push_back(param("work_dir", dir + "/" + name + "-work"));
  params.push_back(param("local_root", dir + "/shared"));
  params.push_back(param("loop_root", dir + "/loop"));
  params.push_back(param("plugin_dirs", dir + "/no-plugins"));
  params.push_back(param("default_driver", "local"));
  params.push_back(param("coordination", "zk://" + zk + "/harness"));
  params.push_back(param("agent_name", name));
  params.push_back(param("lease_drivers", "local"));
  params.push_back(param("lease_wait_secs", "1"));
  return create("org_apache_mesos_DvdiIsolator", params);
}

ContainerRequest leased(const std::string& dir, const std::string& sandbox) {
  ContainerRequest c;
  c.env.push_back(env("DVDI_VOLUME_NAME", "ledger"));
  mkdir((dir + "/" + sandbox).c_str(), 0755);
  c.sandbox = dir + "/" + sandbox;
  return c;
}

void fencing(const std::string& dir, const std::string& zk) {
  std::shared_ptr<Fenced> fenced = std::make_shared<Fenced>();
  {
    rust::Box<IsolatorCore> a = agent(dir, "harness-a", zk);
    std::shared_ptr<Watches> watches = std::make_shared<Watches>();
    a->set_fence_sink(std::unique_ptr<FenceSink>(new RecordingFenceSink(fenced, watches)));
    recover(*a, rust::Vec<rust::String>(), rust::Vec<rust::String>());
    watches->open("fa1");  // as the shim's prepare does, before the core's
    prepare(*a, "fa1", leased(dir, "fa1"));
  }  // agent A stops (its session closes; its container lives on)

  rust::Box<IsolatorCore> b = agent(dir, "harness-b", zk);
  recover(*b, rust::Vec<rust::String>(), rust::Vec<rust::String>());
  prepare(*b, "fb1", leased(dir, "fb1"));

  {
    rust::Box<IsolatorCore> a = agent(dir, "harness-a", zk);
    std::shared_ptr<Watches> watches = std::make_shared<Watches>();
    a->set_fence_sink(std::unique_ptr<FenceSink>(new RecordingFenceSink(fenced, watches)));
    rust::Vec<rust::String> known;
    known.push_back("fa1");
    watches->open("fa1");  // as the shim's recover does for each container Mesos recovered
    RecoverSummary r = recover(*a, known, rust::Vec<rust::String>());
    CHECK(r.fenced == 1, "A's recover fenced its container");
    CHECK(metric(*a, "dvdi/containers_fenced") == 1, "the fenced container counted");
    {
      std::lock_guard<std::mutex> lock(fenced->mutex);
      CHECK(fenced->calls.size() == 1 && fenced->calls[0].first == "fa1",
            "the fence sink was told to stop fa1");
      const std::string message = fenced->calls.empty() ? "" : fenced->calls[0].second;
      CHECK(message.find("volume \"ledger\" (driver \"local\")") != std::string::npos &&
                message.find("agent \"harness-b\"") != std::string::npos,
            "the limitation names the volume and the holder: " + message);
      CHECK(fenced->outcomes.size() == 1 && fenced->outcomes[0] == FenceOutcome::kCompleted,
            "the fence completed fa1's watch promise");
      // The containerizer asks for the future after recover: it carries the limitation.
      std::shared_ptr<StandInPromise::Cell> future = watches->watch("fa1");
      std::lock_guard<std::mutex> cell(future->mutex);
      CHECK(future->set && future->limitation == message, "fa1's watch future is the limitation");
    }
    // Cleanup as the shim runs it: fences are dropped from its start, the entry goes at its end.
    watches->cleaning("fa1");
    CHECK(watches->fence("fa1", std::string("during cleanup")) == FenceOutcome::kCleaningUp,
          "a fence during cleanup is dropped");
    cleanup(*a, "fa1");
    watches->forget("fa1");
    CHECK(watches->size() == 0, "no watch entry left after a fence during cleanup");
    CHECK(watches->fence("fa1", std::string("after cleanup")) == FenceOutcome::kUnknown &&
              watches->size() == 0,
          "a fence after cleanup adds no entry");
    CHECK(watches->fence("dvdi-run-4242", std::string("lease lost")) == FenceOutcome::kUnknown &&
              watches->size() == 0,
          "a fence for a container Mesos never gave (a dvdi run's) adds no entry");
  }
  cleanup(*b, "fb1");
}

// A Docker volume plugin that answers Plugin.Activate and never answers anything else (a test
// double: a plugin stuck on its storage). Serves until destroyed, which closes every connection.
class NeverAnsweringPlugin {
public:
  explicit NeverAnsweringPlugin(const std::string& path) {
    listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr;
    std::memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    if (listener < 0 || bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        listen(listener, 64) != 0) {
      throw std::runtime_error("cannot listen at " + path);
    }
    acceptor = std::thread([this] { serve(); });
  }

  ~NeverAnsweringPlugin() {
    shutdown(listener, SHUT_RDWR);
    acceptor.join();
    std::vector<std::thread> conversing;
    {
      std::lock_guard<std::mutex> lock(mutex);
      for (int fd : open_fds) shutdown(fd, SHUT_RDWR);
      conversing.swap(threads);
    }
    for (std::thread& t : conversing) t.join();
    close(listener);
  }

private:
  void serve() {
    for (;;) {
      int fd = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) return;
      std::lock_guard<std::mutex> lock(mutex);
      open_fds.push_back(fd);
      threads.emplace_back([this, fd] { converse(fd); });
    }
  }

  static std::size_t content_length(std::string headers) {
    for (char& c : headers) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    const std::size_t at = headers.find("content-length:");
    return at == std::string::npos ? 0 : std::strtoul(headers.c_str() + at + 15, nullptr, 10);
  }

  void converse(int fd) {
    std::string buf;
    char chunk[4096];
    for (;;) {
      const std::size_t end = buf.find("\r\n\r\n");
      if (end != std::string::npos) {
        const std::size_t whole = end + 4 + content_length(buf.substr(0, end));
        if (buf.size() >= whole) {
          const bool activate = buf.compare(0, 22, "POST /Plugin.Activate ") == 0;
          buf.erase(0, whole);
          if (activate) {
            const std::string body = "{\"Implements\":[\"VolumeDriver\"]}";
            const std::string reply =
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
                std::to_string(body.size()) + "\r\n\r\n" + body;
            send(fd, reply.data(), reply.size(), MSG_NOSIGNAL);
          }
          continue;
        }
      }
      const ssize_t n = recv(fd, chunk, sizeof chunk, 0);
      if (n <= 0) break;
      buf.append(chunk, static_cast<std::size_t>(n));
    }
  }

  int listener = -1;
  std::thread acceptor;
  std::mutex mutex;
  std::vector<int> open_fds;
  std::vector<std::thread> threads;
};

// One call thread and a plugin that never answers: a prepare of two volumes holds the thread for
// two mount timeouts (its volumes run one after the other, as the bound leaves no room for a
// second thread), so a second prepare, whose deadline is one mount timeout after it was started,
// cannot start before it and is answered with the pool-full message.
void pool_full(const std::string& dir) {
  const std::string plugins = dir + "/never-plugins";
  mkdir(plugins.c_str(), 0755);
  mkdir((dir + "/pool-a").c_str(), 0755);
  mkdir((dir + "/pool-b").c_str(), 0755);
  NeverAnsweringPlugin plugin(plugins + "/never.sock");
  rust::Vec<Param> params;
  params.push_back(param("work_dir", dir + "/pool-work"));
  params.push_back(param("local_root", dir + "/local"));
  params.push_back(param("loop_root", dir + "/loop"));
  params.push_back(param("plugin_dirs", plugins));
  params.push_back(param("default_driver", "never"));
  params.push_back(param("call_threads", "1"));
  params.push_back(param("mount_timeout_secs", "1"));
  rust::Box<IsolatorCore> iso = create("org_apache_mesos_DvdiIsolator", params);
  recover(*iso, rust::Vec<rust::String>(), rust::Vec<rust::String>());

  ContainerRequest stuck;
  stuck.env.push_back(env("DVDI_VOLUME_NAME", "stuck1"));
  stuck.env.push_back(env("DVDI_VOLUME_NAME1", "stuck2"));
  stuck.sandbox = dir + "/pool-a";
  std::shared_ptr<Cell<Launch>> first = start_prepare(*iso, "pool-a", stuck);
  ContainerRequest waits;
  waits.env.push_back(env("DVDI_VOLUME_NAME", "waits"));
  waits.sandbox = dir + "/pool-b";
  std::shared_ptr<Cell<Launch>> second = start_prepare(*iso, "pool-b", waits);

  try {
    answer(second, "the waiting prepare");
    CHECK(false, "a prepare started although the only call thread was held");
  } catch (const std::exception& e) {
    const std::string what = e.what();
    CHECK(what.find("mesos-dvdi prepare of container pool-b: not started within 1 s "
                    "(mount_timeout_secs): the pool is full: all 1 call threads are busy, 1 "
                    "call already running, the oldest for ") == 0,
          "the refusal says which call and why: " + what);
    CHECK(what.find("(prepare of container pool-a, in ") != std::string::npos &&
              what.find(" of volume \"stuck") != std::string::npos &&
              what.find(" via driver \"never\" for ") != std::string::npos,
          "the refusal names what the running call waits for: " + what);
    CHECK(what.find("raise call_threads") != std::string::npos,
          "the refusal says what to do: " + what);
  }
  try {
    answer(first, "the stuck prepare");
    CHECK(false, "a prepare against a plugin that never answers succeeded");
  } catch (const std::exception& e) {
    const std::string what = e.what();
    CHECK(what.find("stuck1") != std::string::npos, "the stuck prepare's failure: " + what);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4 && argc != 5) {
    std::cerr << "usage: harness DIR PLUGIN_DIR SOURCE [ZK_HOST:PORT]" << std::endl;
    return 2;
  }
  const std::string dir = argv[1];
  const std::string plugins = argv[2];
  const std::string source = argv[3];
  set_log_sink(std::unique_ptr<LogSink>(new StderrSink()));
  mkdir((dir + "/rootfs").c_str(), 0755);
  mkdir((dir + "/sandbox1").c_str(), 0755);
  mkdir((dir + "/sandbox2").c_str(), 0755);
  mkdir((dir + "/sandbox3").c_str(), 0755);

  std::string loop_mnt = dir + "/loop/mnt/db";
  std::string loop_mnt3 = dir + "/loop/mnt/scratch";
  {
    rust::Box<IsolatorCore> iso = make(dir, plugins);
    RecoverSummary first = recover(*iso, rust::Vec<rust::String>(), rust::Vec<rust::String>());
    CHECK(first.kept == 0 && first.errors.empty(), "recover of an empty agent");

    // Container 1: the environment form, a loop volume, a rootfs.
    ContainerRequest c1;
    c1.env.push_back(env("PATH", "/bin"));
    c1.env.push_back(env("DVDI_VOLUME_DRIVER", "loop"));
    c1.env.push_back(env("DVDI_VOLUME_NAME", "db"));
    c1.env.push_back(env("DVDI_VOLUME_CONTAINERPATH", "/data"));
    c1.sandbox = dir + "/sandbox1";
    c1.rootfs = dir + "/rootfs";
    Launch p1 = prepare(*iso, "c1", c1);
    CHECK(p1.mounts.size() == 1, "c1 has one bind");
    CHECK(p1.new_mount_namespace, "c1 asks for CLONE_NEWNS");
    CHECK(std::string(p1.mounts[0].target) == dir + "/rootfs/data", "c1 target inside the rootfs");
    CHECK(is_mount_root(loop_mnt), "c1's loop volume is mounted on the host");
    CHECK(launch(p1, "echo from-c1 > " + dir + "/rootfs/data/file") == 0, "c1 writes through the bind");
    CHECK(read_file(loop_mnt + "/file") == "from-c1\n", "c1's write is in the volume");

    // Container 2: the DOCKER_VOLUME form, read-only, relative to the sandbox, no rootfs.
    ContainerRequest c2;
    DockerVolume dv;
    dv.driver = "local";
    dv.name = "shared";
    dv.container_path = "vol";
    dv.read_only = true;
    c2.docker_volumes.push_back(dv);
    c2.sandbox = dir + "/sandbox2";
    Launch p2 = prepare(*iso, "c2", c2);
    CHECK(p2.mounts.size() == 1 && p2.mounts[0].read_only, "c2 has one read-only bind");
    CHECK(std::string(p2.mounts[0].target) == dir + "/sandbox2/vol", "c2 target in its sandbox");
    CHECK(launch(p2, "test -d " + dir + "/sandbox2/vol && ! touch " + dir + "/sandbox2/vol/x 2>/dev/null") == 0,
          "c2's bind is there and read-only");

    // A Rust error arrives as an exception naming the variable.
    ContainerRequest bad;
    bad.env.push_back(env("DVDI_VOLUME_NAME10", "x"));
    bad.sandbox = dir + "/sandbox1";
    try {
      prepare(*iso, "bad", bad);
      CHECK(false, "an invalid request was accepted");
    } catch (const std::exception& e) {
      CHECK(std::string(e.what()).find("DVDI_VOLUME_NAME10") != std::string::npos,
            std::string("error names the variable: ") + e.what());
    }
    // A Rust panic arrives as an exception too, and the process lives on.
    try {
      panic_guard_self_test("boom");
      CHECK(false, "the panic self-test returned");
    } catch (const rust::Error& e) {
      std::string what = e.what();
      CHECK(what.find("panic") != std::string::npos && what.find("boom") != std::string::npos,
            "panic message: " + what);
    }

    // What the endpoints serve and the gauges read: two volumes for two containers, three
    // prepares of which one failed.
    const std::string status = status_json(*iso);
    write_file(dir + "/status.json", status);
    CHECK(status.find("\"db\"") != std::string::npos, "the status names c1's volume");
    const std::pair<bool, std::string> health = read_health(*iso);
    write_file(dir + "/health.json", health.second);
    CHECK(health.first, "healthy: " + health.second);
    CHECK(iso->metrics().size() == 13, "thirteen metrics");
    CHECK(metric(*iso, "dvdi/calls_waiting") == 0 && metric(*iso, "dvdi/calls_refused") == 0,
          "no call waiting or refused");
    CHECK(metric(*iso, "dvdi/prepares") == 3, "prepares counted");
    CHECK(metric(*iso, "dvdi/prepare_failures") == 1, "the failed prepare counted");
    CHECK(metric(*iso, "dvdi/volumes_mounted") == 2, "two volumes mounted");
    CHECK(metric(*iso, "dvdi/containers_using_volumes") == 2, "two containers use volumes");
    CHECK(metric(*iso, "dvdi/backend_calls") >= 2, "backend calls counted");

    cleanup(*iso, "c2");
    CHECK(metric(*iso, "dvdi/cleanups") == 1, "the cleanup counted");

    // Container 4: a real third-party Docker volume plugin (easyfuse mounting bindfs).
    ContainerRequest c4;
    c4.env.push_back(env("DVDI_VOLUME_DRIVER", "easyfuse"));
    c4.env.push_back(env("DVDI_VOLUME_NAME", "fusevol"));
    c4.env.push_back(env("DVDI_VOLUME_OPTS", "device=bindfs#" + source));
    c4.env.push_back(env("DVDI_VOLUME_CONTAINERPATH", "/srv/fuse"));
    c4.sandbox = dir + "/sandbox3";
    c4.rootfs = dir + "/rootfs";
    Launch p4 = prepare(*iso, "c4", c4);
    CHECK(p4.mounts.size() == 1, "c4 has one bind");
    CHECK(is_mount_root(std::string(p4.mounts[0].source)), "the plugin mounted c4's volume");
    CHECK(launch(p4, "echo via-plugin > " + dir + "/rootfs/srv/fuse/file") == 0,
          "c4 writes through the bind");
    CHECK(read_file(source + "/file") == "via-plugin\n", "c4's write reached the plugin's volume");
    const std::string fuse_mount = std::string(p4.mounts[0].source);
    cleanup(*iso, "c4");
    CHECK(!is_mount_root(fuse_mount), "the plugin unmounted c4's volume");

    swapped_target(*iso, dir);

    // Container 3: orphaned by the restart below.
    ContainerRequest c3;
    c3.env.push_back(env("DVDI_VOLUME_DRIVER", "loop"));
    c3.env.push_back(env("DVDI_VOLUME_NAME", "scratch"));
    c3.sandbox = dir + "/sandbox3";
    prepare(*iso, "c3", c3);
    CHECK(is_mount_root(loop_mnt3), "c3's volume is mounted");
  }  // the agent "restarts": the isolator is destroyed

  {
    rust::Box<IsolatorCore> iso = make(dir, plugins);
    rust::Vec<rust::String> known, orphans;
    known.push_back("c1");
    known.push_back("c3");
    orphans.push_back("c3");
    RecoverSummary r = recover(*iso, known, orphans);
    CHECK(r.errors.empty(), "recover without errors");
    CHECK(r.dropped == 1 && r.unmounted == 1 && r.kept == 1, "recover dropped c3, kept c1");
    CHECK(!is_mount_root(loop_mnt3), "the orphan's volume is unmounted");
    CHECK(is_mount_root(loop_mnt), "the live container's volume stays mounted");
    cleanup(*iso, "c1");
    CHECK(!is_mount_root(loop_mnt), "c1's volume is unmounted after its cleanup");
  }

  {
    // An old modules.json, unchanged: the original's name, its work_dir (the agent's work
    // directory) and the isolator_command of its README, plus where our own state goes.
    rust::Vec<Param> params;
    params.push_back(param("isolator_command", "/emc/dvdi_isolator"));
    params.push_back(param("work_dir", dir + "/agent"));
    params.push_back(param("state_dir", dir + "/legacy-state"));
    // Only the test's own file, never the original's fixed locations on this host.
    params.push_back(param("legacy_checkpoint", dir + "/agent/meta/dvdimounts.pb"));
    params.push_back(param("local_root", dir + "/local"));
    params.push_back(param("loop_root", dir + "/loop"));
    params.push_back(param("plugin_dirs", plugins));
    rust::Box<IsolatorCore> iso =
        create("com_emccode_mesos_DockerVolumeDriverIsolator", params);
    rust::Vec<rust::String> known;
    known.push_back("old-live");
    RecoverSummary r = recover(*iso, known, rust::Vec<rust::String>());
    CHECK(r.errors.empty(), "the original's checkpoint imports without errors");
    CHECK(r.kept == 1 && r.dropped == 1 && r.unmounted == 1,
          "the live container's volume kept, the gone one's released");
    CHECK(metric(*iso, "dvdi/containers_using_volumes") == 1, "the live container counted");
    try {
      create("com_emccode_mesos_DockerVolumeDriverIsolator", rust::Vec<Param>());
      rust::Vec<Param> bad;
      bad.push_back(param("isolator_command", "/x"));
      create("org_apache_mesos_DvdiIsolator", bad);
      CHECK(false, "isolator_command was accepted under the new name");
    } catch (const rust::Error& e) {
      CHECK(std::string(e.what()).find("isolator_command") != std::string::npos,
            std::string("the error names the parameter: ") + e.what());
    }
  }

  try {
    pool_full(dir);
  } catch (const std::exception& e) {
    CHECK(false, std::string("pool scenario: ") + e.what());
  }

  if (argc == 5) {
    try {
      fencing(dir, argv[4]);
    } catch (const std::exception& e) {
      CHECK(false, std::string("fencing scenario: ") + e.what());
    }
  }

  const char* csi_config = getenv("DVDI_HARNESS_CSI_CONFIG");
  const char* csi_id = getenv("DVDI_HARNESS_CSI_VOLUME");
  if (csi_config != nullptr && csi_id != nullptr) {
    try {
      csi_volume(dir, csi_config, csi_id);
      std::cerr << "harness: CSI_VOLUME scenario ran" << std::endl;
    } catch (const std::exception& e) {
      CHECK(false, std::string("CSI_VOLUME scenario: ") + e.what());
    }
  }

  if (failures == 0) std::cerr << "harness: all checks passed" << std::endl;
  return failures == 0 ? 0 : 1;
}
