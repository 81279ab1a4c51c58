//! The supervisor each local attempt runs under, so that its exit status
//! survives the server.
//!
//! The engine does not start the run's command itself: it starts
//! `<shell> -c SCRIPT flotilla-supervisor <shell> <command>`, a small shell
//! that runs `<shell> -c <command>` as its child, waits for it, and writes
//! the child's exit status (`$?`: the exit code, or 128 + the signal that
//! killed it) to [`STATUS`] in the attempt directory, atomically (temporary
//! file, then rename). The supervisor is the leader of the attempt's
//! process group, so terminating the group still reaches the command and
//! everything it started. It catches TERM, INT and HUP only to outlive its
//! child by the moment it takes to record the status; the child gets the
//! default dispositions (a caught signal is reset on `exec`).
//!
//! The server that started an attempt is the supervisor's parent; when the
//! server dies, the supervisor lives on, and a later engine object that
//! adopts the attempt reads the status file once the supervisor is gone.
//! Only when the supervisor itself was killed before it could write (e.g.
//! SIGKILL to the whole group) is the status unknown.

use std::path::Path;
use std::process::Stdio;

/// The file the supervisor writes the command's exit status to: one line,
/// the decimal value of `$?`.
pub(super) const STATUS: &str = "exit-status";

/// The supervisor. `$1` is the shell, `$2` the run's command. The `mv` runs
/// with a fixed `PATH`, since the run's environment may set its own.
const SCRIPT: &str = "trap ':' TERM INT HUP
\"$1\" -c \"$2\"
flotilla_status=$?
printf '%s\\n' \"$flotilla_status\" > exit-status.tmp && PATH=/usr/bin:/bin mv -f exit-status.tmp exit-status
exit \"$flotilla_status\"";

/// The command that runs `command` under the supervisor with `shell`, with
/// standard input from `/dev/null`; the caller sets the working directory
/// (the attempt directory: the status file is written there), the
/// environment and the output.
pub(super) fn command(shell: &Path, command: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(shell);
    cmd.arg("-c")
        .arg(SCRIPT)
        .arg("flotilla-supervisor")
        .arg(shell)
        .arg(command)
        .stdin(Stdio::null());
    cmd
}

/// The exit status the supervisor recorded in `dir`, if it did.
pub(super) fn read_status(dir: &Path) -> Option<i64> {
    let text = std::fs::read_to_string(dir.join(STATUS)).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(command_text: &str) -> (std::process::ExitStatus, Option<i64>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let status = command(Path::new("/bin/sh"), command_text)
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", "/nonexistent")
            .status()
            .await
            .expect("supervisor runs");
        (status, read_status(dir.path()))
    }

    #[tokio::test]
    async fn records_exit_codes_and_signal_deaths() {
        assert_eq!(run("exit 0").await.1, Some(0));
        let (status, recorded) = run("exit 3").await;
        assert_eq!((status.code(), recorded), (Some(3), Some(3)));
        // The shell reports a death by signal N as 128 + N.
        assert_eq!(run("kill -SEGV $$").await.1, Some(128 + 11));
        // Arguments reach the command intact, and no temporary file stays.
        let dir = tempfile::tempdir().expect("tempdir");
        let status = command(
            Path::new("/bin/sh"),
            "[ \"$0\" = /bin/sh ] && echo 'a \"b\" $c' > out",
        )
        .current_dir(dir.path())
        .status()
        .await
        .expect("runs");
        assert!(status.success());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("out")).expect("out"),
            "a \"b\" $c\n"
        );
        assert!(!dir.path().join("exit-status.tmp").exists());
    }

    #[tokio::test]
    async fn term_to_the_group_is_recorded_as_the_childs_death() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = command(Path::new("/bin/sh"), "echo ready > ready; exec sleep 60")
            .current_dir(dir.path())
            .process_group(0)
            .spawn()
            .expect("spawn");
        let pid = child.id().expect("pid") as i32;
        while !dir.path().join("ready").exists() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("killpg");
        let status = child.wait().await.expect("wait");
        assert_eq!(status.code(), Some(128 + 15), "{status:?}");
        assert_eq!(read_status(dir.path()), Some(128 + 15));
    }
}
