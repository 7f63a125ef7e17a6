// The endpoints process and the metric gauges (see endpoints.h). Translation only: every JSON
// document and every count is the Rust core's.

#include "mesos-dvdi/cpp/endpoints.h"

#include <exception>
#include <memory>
#include <string>

#include <glog/logging.h>

#include <process/http.hpp>
#include <process/metrics/metrics.hpp>
#include <process/process.hpp>

#include <stout/option.hpp>

namespace mesos_dvdi {

namespace {

// The agent authenticates its read-only endpoints under this realm (defined inside Mesos, not in
// its public headers); libprocess lets a route through when no authenticator is installed for it,
// so these endpoints are protected exactly when the agent's read-only ones are.
const char READONLY_REALM[] = "mesos-agent-readonly";

process::http::Response jsonResponse(process::http::Response response) {
  response.headers["Content-Type"] = "application/json";
  return response;
}

// One metric's value, asked of the core when /metrics/snapshot is read (the core owns the count,
// so there is no second bookkeeping here).
process::Future<double> metricValue(const SharedCore& core, const std::string& name) {
  try {
    for (const Metric& m : (*core)->metrics()) {
      if (text(m.name) == name) return m.value;
    }
    return process::Failure("mesos-dvdi has no metric " + name);
  } catch (const std::exception& e) {
    return process::Failure(e.what());
  }
}

// A read's answer as an HTTP response: 200 with the JSON when all is well, 503 with it when not
// (only health says so), 500 with the message when the read failed.
class ResponseAnswer : public ReadDone {
public:
  process::Future<process::http::Response> future() const { return answer.future(); }

  void answered(bool ok, rust::Str body) const override {
    try {
      const std::string json = text(body);
      answer.set(jsonResponse(ok ? process::http::Response(process::http::OK(json))
                                 : process::http::Response(
                                       process::http::ServiceUnavailable(json))));
    } catch (const std::exception& e) {
      answer.fail(e.what());
    } catch (...) {
      answer.fail("mesos-dvdi: building the response failed");
    }
  }

  void failed(rust::Str message) const override {
    try {
      answer.set(process::http::InternalServerError(text(message)));
    } catch (...) {
      answer.fail(message);
    }
  }

private:
  Answer<process::http::Response> answer;
};

}  // namespace

// Serves the core's JSON at /dvdi/volumes and /dvdi/health on the agent's port.
class DvdiProcess : public process::Process<DvdiProcess> {
public:
  explicit DvdiProcess(SharedCore core)
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
  // Both read the checkpoint directory: on the core's own threads for reads (never those of the
  // calls, which a stuck plugin may hold), answered through ResponseAnswer.
  process::Future<process::http::Response> volumes(
      const process::http::Request&,
      const Option<process::http::authentication::Principal>&) {
    std::unique_ptr<ResponseAnswer> done(new ResponseAnswer());
    process::Future<process::http::Response> future = done->future();
    (*core)->start_status_json(std::move(done));
    return future;
  }

  process::Future<process::http::Response> health(
      const process::http::Request&,
      const Option<process::http::authentication::Principal>&) {
    std::unique_ptr<ResponseAnswer> done(new ResponseAnswer());
    process::Future<process::http::Response> future = done->future();
    (*core)->start_health(std::move(done));
    return future;
  }

  SharedCore core;
};

Endpoints::Endpoints(SharedCore core) : server(new DvdiProcess(core)) {
  // Ask the core for its metrics before spawning: if that throws, nothing is running yet.
  std::vector<process::metrics::PullGauge> all;
  for (const Metric& m : (*core)->metrics()) {
    const std::string name = text(m.name);
    all.push_back(process::metrics::PullGauge(
        name, [core, name]() { return metricValue(core, name); }));
  }
  // The process id and the metric names are the agent's one namespace: a second instance (the
  // module loaded twice) must neither serve nor add, nor later remove what the first one added.
  spawned = static_cast<bool>(process::spawn(server.get()));
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

Endpoints::~Endpoints() {
  if (!spawned) return;
  // The gauges hold the core themselves, so a read racing this still finds it.
  for (const process::metrics::PullGauge& gauge : gauges) {
    process::metrics::remove(gauge);
  }
  process::terminate(server.get());
  process::wait(server.get());
}

}  // namespace mesos_dvdi
