//! The first process (PID 1) of a `dvdi run` command's PID namespace.
//!
//! `dvdi run` starts its command in a PID namespace of its own, so that nothing the command
//! starts can outlive it: when the namespace's first process exits, the kernel kills every
//! process left in it, and only then is that exit reported to `dvdi`. Without this, a process the
//! command left behind (`sh -c 'sleep 100 & wait'`, interrupted) would keep the command's mount
//! namespace, and with it the volume's file system, alive after `dvdi` released the volume.
//!
//! The command itself is not that first process: the kernel delivers to a namespace's PID 1 only
//! the signals it has a handler for, so a plain `sleep` there would ignore the SIGINT and SIGTERM
//! `dvdi` forwards. A small init, forked from the child between fork and exec, starts the command
//! as its child, passes on the forwarded signals, reaps orphans, and exits with the command's
//! status (128 + N when signal N killed it, as `dvdi` reports it anyway).
//!
//! The init never execs: it runs in a copy of a multi-threaded process, where only
//! async-signal-safe calls are allowed. It makes plain system calls only (no allocation, no lock).

use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};

/// Forks the command's process from the namespace's first process. Returns in the command's
/// process (signals unblocked, ready to exec); in the first process it never returns: it acts
/// as the init described above and exits with the command's status.
///
/// `forwarded` are the signals `dvdi` passes on; they, and SIGCHLD, are blocked in the init and
/// taken with sigwait (a blocked signal reaches a namespace's init even without a handler).
pub fn fork_command(forwarded: &[Signal]) -> Result<(), Errno> {
    let mut waited = SigSet::empty();
    for s in forwarded {
        waited.add(*s);
    }
    waited.add(Signal::SIGCHLD);
    // Before the fork: a child that exits at once still leaves its SIGCHLD pending for sigwait.
    waited.thread_block()?;
    // SAFETY: this process is the single-threaded child of a fork; the init side below makes
    // only async-signal-safe calls, and the command's side goes on to exec.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Child => SigSet::empty().thread_set_mask(),
        ForkResult::Parent { child } => run_init(child, &waited),
    }
}

fn run_init(command: Pid, waited: &SigSet) -> ! {
    // Every inherited descriptor goes: the pipes `dvdi` watches for exec must close when the
    // command execs, and a terminal or pipe must not be held open by the init.
    // SAFETY: close_range(2) takes plain integers and touches only this process's descriptors.
    unsafe { libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) };
    loop {
        let Ok(sig) = waited.wait() else { continue };
        if sig != Signal::SIGCHLD {
            let _ = nix::sys::signal::kill(command, sig);
            continue;
        }
        // Reap everything that ended: the command, and orphans it left to the init.
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == command => exit(code),
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == command => exit(128 + sig as i32),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                _ => {}
            }
        }
    }
}

fn exit(code: i32) -> ! {
    // SAFETY: _exit(2) ends the process without running anything of the parent's copy (no
    // atexit handlers, no stdio flush), as a forked child must.
    unsafe { libc::_exit(code) }
}
