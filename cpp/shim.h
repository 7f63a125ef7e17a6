// What the three Mesos shim files share (isolator.cpp, watch.cpp, endpoints.cpp): the core as they
// hold it, a rust::String's text, and `Answer`, the promise behind one of the core's completions
// (see completion.h): every call that may block runs on the core's own bounded pool and comes back
// through one, so no libprocess thread ever waits and the shim starts no thread. Mesos builds only
// (it needs libprocess); see build.rs.
#pragma once

#include <exception>
#include <memory>
#include <string>

#include <glog/logging.h>

#include <process/future.hpp>

#include "mesos-dvdi/src/ffi.rs.h"

namespace mesos_dvdi {

// The Rust core, shared by the isolator, the endpoints process and the metric gauges.
using SharedCore = std::shared_ptr<rust::Box<IsolatorCore>>;

// A rust::String's text. Never through its conversion operator: compiled with -fabi-version=9
// (see build.rs) its name carries an [abi:cxx11] tag that the cxx library, built with today's
// ABI, does not define, and the agent would refuse the module with an undefined symbol.
inline std::string text(const rust::String& s) { return std::string(s.data(), s.size()); }
inline std::string text(rust::Str s) { return std::string(s.data(), s.size()); }

// The promise a completion fulfils. Its methods run on the core's threads, called from Rust, so
// nothing escapes them; completing a future runs its callbacks there too, as libprocess allows.
// Destroyed unanswered (a bug in the core), it fails the future rather than leave the agent
// waiting for ever; once answered, that failure is a no-op.
template <typename T>
class Answer {
public:
  Answer() : promise(new process::Promise<T>()) {}
  ~Answer() { fail("mesos-dvdi: the call ended without an answer (an internal error)"); }

  Answer(const Answer&) = delete;
  Answer& operator=(const Answer&) = delete;

  process::Future<T> future() const { return promise->future(); }

  void set(const T& value) const {
    try {
      promise->set(value);
    } catch (const std::exception& e) {
      fail(e.what());
    } catch (...) {
      fail("mesos-dvdi: completing the call failed");
    }
  }

  void fail(rust::Str message) const {
    try {
      fail(text(message));
    } catch (...) {
      fail("mesos-dvdi: the call failed (its message could not be copied)");
    }
  }

  void fail(const char* message) const {
    try {
      fail(std::string(message));
    } catch (...) {
      LOG(ERROR) << "mesos-dvdi: a call's failure could not be reported";
    }
  }

private:
  void fail(const std::string& message) const {
    try {
      promise->fail(message);
    } catch (const std::exception& e) {
      LOG(ERROR) << "mesos-dvdi: failing a call's future raised: " << e.what();
    } catch (...) {
      LOG(ERROR) << "mesos-dvdi: failing a call's future raised";
    }
  }

  std::unique_ptr<process::Promise<T>> promise;
};

}  // namespace mesos_dvdi
