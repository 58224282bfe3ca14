//! `infra/services.sh` (behind `make run`) decides from a pid file whether a service runs. A
//! zombie — a killed service the machine's init has not reaped yet — and a live process that is
//! not the service's binary (pids are reused; pid files outlive reboots) must count as stopped,
//! or `make run` leaves a crashed service down.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn status(home: &Path) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/services.sh");
    let out = Command::new(script)
        .arg("status")
        .env("STRATA_HOME", home)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

fn state(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat.rsplit_once(") ").unwrap().1.chars().next().unwrap()
}

#[test]
fn a_zombie_or_a_foreign_pid_is_not_a_running_service() {
    let home = tempfile::tempdir().unwrap();
    let run = home.path().join("run");
    std::fs::create_dir_all(&run).unwrap();

    // A zombie: a child that exited and that nobody reaped yet.
    let zombie = Command::new("true").spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while state(zombie.id()) != 'Z' {
        assert!(Instant::now() < deadline, "the child never exited");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::write(run.join("speed.pid"), zombie.id().to_string()).unwrap();

    // A live process of another program under a service's pid.
    let mut foreign = Command::new("sleep").arg("60").spawn().unwrap();
    std::fs::write(run.join("serving.pid"), foreign.id().to_string()).unwrap();

    // A live process of the service's own binary (a copy of `sleep` under its name).
    let bin = home.path().join("strata-batch");
    std::fs::copy("/bin/sleep", &bin).unwrap();
    let mut ours = Command::new(&bin).arg("60").spawn().unwrap();
    std::fs::write(run.join("batch.pid"), ours.id().to_string()).unwrap();
    // A pid file that is not a number.
    std::fs::write(run.join("archive.pid"), "garbage").unwrap();

    let out = status(home.path());
    for line in ["speed stopped", "serving stopped", "archive stopped"] {
        assert!(out.contains(line), "{line:?} in:\n{out}");
    }
    assert!(
        out.contains(&format!("batch running (pid {})", ours.id())),
        "{out}"
    );
    let _ = foreign.kill();
    let _ = ours.kill();
    let _ = (foreign.wait(), ours.wait());
    drop(zombie);
}
