//! Names of the signals behind exit codes, for the reasons engines give.
//!
//! A shell, Docker, ECS and Kubernetes all report a process killed by
//! signal N as exit code 128 + N. Engines use [`signal_of_exit_code`] to
//! name the signal in a run's reason ("SIGSEGV"), since a crash is the
//! program's end, not a lost host.

/// Linux signal numbers 1-31 and their names.
const NAMES: [&str; 31] = [
    "SIGHUP",
    "SIGINT",
    "SIGQUIT",
    "SIGILL",
    "SIGTRAP",
    "SIGABRT",
    "SIGBUS",
    "SIGFPE",
    "SIGKILL",
    "SIGUSR1",
    "SIGSEGV",
    "SIGUSR2",
    "SIGPIPE",
    "SIGALRM",
    "SIGTERM",
    "SIGSTKFLT",
    "SIGCHLD",
    "SIGCONT",
    "SIGSTOP",
    "SIGTSTP",
    "SIGTTIN",
    "SIGTTOU",
    "SIGURG",
    "SIGXCPU",
    "SIGXFSZ",
    "SIGVTALRM",
    "SIGPROF",
    "SIGWINCH",
    "SIGIO",
    "SIGPWR",
    "SIGSYS",
];

/// The name of signal `signal` (Linux numbering), or `None` for a number
/// that is not one of the 31 standard signals.
pub fn signal_name(signal: i64) -> Option<&'static str> {
    let i = usize::try_from(signal.checked_sub(1)?).ok()?;
    NAMES.get(i).copied()
}

/// `(signal number, name)` of the signal an exit code above 128 stands
/// for (137 → `(9, "SIGKILL")`), or `None` for other codes.
pub fn signal_of_exit_code(code: i64) -> Option<(i64, &'static str)> {
    if code <= 128 {
        return None;
    }
    let sig = code - 128;
    signal_name(sig).map(|name| (sig, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_name_their_signals() {
        assert_eq!(signal_of_exit_code(139), Some((11, "SIGSEGV")));
        assert_eq!(signal_of_exit_code(134), Some((6, "SIGABRT")));
        assert_eq!(signal_of_exit_code(137), Some((9, "SIGKILL")));
        assert_eq!(signal_of_exit_code(143), Some((15, "SIGTERM")));
        assert_eq!(signal_of_exit_code(159), Some((31, "SIGSYS")));
        for code in [0, 1, 3, 128, 160, 255, -1, i64::MAX] {
            assert_eq!(signal_of_exit_code(code), None, "{code}");
        }
        assert_eq!(signal_name(0), None);
        assert_eq!(signal_name(i64::MIN), None);
    }

    #[test]
    fn names_match_the_platform() {
        for sig in 1..=31 {
            let ours = signal_name(sig).expect("standard signal");
            let theirs = nix::sys::signal::Signal::try_from(i32::try_from(sig).expect("small"))
                .expect("platform signal");
            assert_eq!(ours, theirs.as_str(), "signal {sig}");
        }
    }
}
