//! SIGINT and SIGTERM as an event-loop source: the handler writes one byte to a non-blocking
//! pipe (write(2) is async-signal-safe), whose read end the loop polls.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

static WRITE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(_signal: libc::c_int) {
    let fd = WRITE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = 1u8;
        // SAFETY: write(2) on a valid non-blocking pipe fd is async-signal-safe; a full pipe
        // just drops the byte (a shutdown is already pending then).
        unsafe {
            libc::write(fd, (&byte as *const u8).cast(), 1);
        }
    }
}

/// Installs the handlers; returns the pipe's read end, to register for readable events.
pub fn install() -> io::Result<OwnedFd> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds is a valid out-array of two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    WRITE_FD.store(fds[1], Ordering::Relaxed);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction with a valid handler and an empty mask is well-formed.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    // SAFETY: fds[0] was just created by pipe2 and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fds[0]) })
}

/// Raises the soft open-file limit to the hard limit; returns the soft limit in force.
pub fn raise_open_files() -> u64 {
    // SAFETY: rlimit is a plain out-parameter.
    unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return 1024;
        }
        if rl.rlim_cur < rl.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: rl.rlim_max,
                rlim_max: rl.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return rl.rlim_max as u64;
            }
        }
        rl.rlim_cur as u64
    }
}
