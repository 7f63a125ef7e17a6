// How the Rust core answers the calls that may block (recover, prepare, cleanup, the endpoints'
// reads): each bridge call takes one of these, returns at once, and the core answers it later
// from a thread of its bounded pool through exactly one method. The Mesos shim implements them
// with libprocess promises (isolator.cpp, endpoints.cpp), the test harness with waitable cells.
//
// Called from Rust, which cannot take a C++ exception: no method may throw. An implementation
// should also fail its promise when destroyed unanswered, so that a bug in the core can never
// leave the agent waiting for ever.
#pragma once

#include "rust/cxx.h"

namespace mesos_dvdi {

// Shared structs of the bridge (src/ffi.rs), defined by its generated header.
struct RecoverSummary;
struct Launch;

class RecoverDone {
public:
  virtual ~RecoverDone() {}
  virtual void recovered(const RecoverSummary& summary) const = 0;
  virtual void failed(rust::Str message) const = 0;
};

class PrepareDone {
public:
  virtual ~PrepareDone() {}
  virtual void prepared(const Launch& launch) const = 0;
  virtual void failed(rust::Str message) const = 0;
};

class CleanupDone {
public:
  virtual ~CleanupDone() {}
  virtual void cleaned_up() const = 0;
  virtual void failed(rust::Str message) const = 0;
};

// The status and health endpoints' answer: the JSON body, and whether all is well.
class ReadDone {
public:
  virtual ~ReadDone() {}
  virtual void answered(bool ok, rust::Str body) const = 0;
  virtual void failed(rust::Str message) const = 0;
};

}  // namespace mesos_dvdi
