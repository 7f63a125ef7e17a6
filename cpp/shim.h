// What the three Mesos shim files share (isolator.cpp, watch.cpp, endpoints.cpp): the core as they
// hold it, a rust::String's text, and `offload`, which keeps every bridge call off the libprocess
// threads. Mesos builds only (it needs libprocess); see build.rs.
#pragma once

#include <exception>
#include <memory>
#include <string>
#include <thread>

#include <process/future.hpp>

#include "mesos-dvdi/src/ffi.rs.h"

namespace mesos_dvdi {

// The Rust core, shared by the isolator, the worker threads (which may outlive a call's future),
// the endpoints process and the metric gauges.
using SharedCore = std::shared_ptr<rust::Box<IsolatorCore>>;

// A rust::String's text. Never through its conversion operator: compiled with -fabi-version=9
// (see build.rs) its name carries an [abi:cxx11] tag that the cxx library, built with today's
// ABI, does not define, and the agent would refuse the module with an undefined symbol.
inline std::string text(const rust::String& s) { return std::string(s.data(), s.size()); }

// Runs `work` on a thread of its own and completes the future with its result; a C++ exception
// (rust::Error included) fails the future with its message. A bridge call may block for minutes
// (an EBS attach), and a blocked libprocess thread stalls the whole agent.
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

}  // namespace mesos_dvdi
