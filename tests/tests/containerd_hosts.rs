//! `berth-registry containerd-hosts` with a real containerd: the hosts.toml
//! files it writes make `ctr images pull` go to the node's registry (and
//! fall back to the upstream when that is down), other tools' files come
//! back exactly on removal, and bad input or an unwritable directory
//! changes nothing.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use berth_tests::certs::TestCa;
use berth_tests::containerd::{Containerd, hosts_writer, hosts_writer_command, snapshot};
use berth_tests::images::{OciLayout, single_image_layout};
use berth_tests::oci::Descriptor;
use berth_tests::process::{ServerProcess, StartError, free_port, read_log};
use berth_tests::registry::{BerthRegistry, RegistryOptions};
use berth_tests::skopeo::{Skopeo, docker_ref};

const REPO: &str = "team/app";
const TAG: &str = "v1";
/// What "falls back within a few seconds" means here.
const FALLBACK_LIMIT: Duration = Duration::from_secs(5);

/// A registry holding a fresh image under `team/app:v1`, the layout it
/// came from and the manifest's descriptor.
fn registry_with_image(work: &Path) -> (BerthRegistry, OciLayout, Descriptor) {
    let registry = BerthRegistry::start(RegistryOptions::new());
    let (layout, manifest) = single_image_layout(&work.join("layout"), TAG, &[64 * 1024, 4096]);
    Skopeo::new().copy(
        &layout.reference(TAG),
        &docker_ref(&registry.addr(), REPO, TAG),
    );
    (registry, layout, manifest)
}

/// The writer's output, asserting it succeeded.
fn run_ok<S: AsRef<OsStr> + std::fmt::Debug>(args: &[S]) -> String {
    let out = hosts_writer(args);
    assert!(out.status.success(), "{args:?}: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn an_image_pushed_to_the_registry_pulls_by_the_registrys_own_name() {
    let work = tempfile::tempdir().unwrap();
    let (registry, layout, manifest) = registry_with_image(work.path());
    let hosts = work.path().join("certs.d");
    fs::create_dir(&hosts).unwrap();
    let printed = run_ok(&[
        "apply",
        "--hosts-dir",
        hosts.to_str().unwrap(),
        "--endpoint",
        &registry.url(),
        "--owner",
        "registry/local",
        "--own-name",
        "berth.test",
    ]);
    assert!(
        printed.contains("berth.test/hosts.toml: written"),
        "{printed}"
    );

    let containerd = Containerd::start();
    let reference = format!("berth.test/{REPO}:{TAG}");
    let pull = containerd.pull(&hosts, &reference);
    assert!(
        pull.ok,
        "{}\n--- containerd\n{}",
        pull.output,
        containerd.log()
    );
    println!(
        "pull of {reference} through the registry's own name: {:?}",
        pull.elapsed
    );
    containerd.assert_holds(&reference, &layout, &manifest);
}

#[test]
fn a_mirror_pulls_from_the_node_instance_and_falls_back_to_the_server_when_it_is_down() {
    let work = tempfile::tempdir().unwrap();
    // The upstream stands in for a public registry; the node instance holds
    // the same repository (as a pull-through cache would).
    let (upstream, layout, manifest) = registry_with_image(work.path());
    let node = BerthRegistry::start(RegistryOptions::new());
    Skopeo::new().copy(&layout.reference(TAG), &docker_ref(&node.addr(), REPO, TAG));
    let dead = format!("http://127.0.0.1:{}", free_port());
    let reference = format!("upstream.test/{REPO}:{TAG}");

    // Node instance up, server unreachable: the pull can only come from the node.
    let hosts = work.path().join("up");
    fs::create_dir(&hosts).unwrap();
    let mirror = format!("upstream.test={dead}");
    run_ok(&[
        "apply",
        "--hosts-dir",
        hosts.to_str().unwrap(),
        "--endpoint",
        &node.url(),
        "--owner",
        "registry/local",
        "--mirror",
        &mirror,
    ]);
    let containerd = Containerd::start();
    let pull = containerd.pull(&hosts, &reference);
    assert!(pull.ok, "through the node instance: {}", pull.output);
    containerd.assert_holds(&reference, &layout, &manifest);
    println!("pull through the node instance: {:?}", pull.elapsed);

    // Node instance down, server up: containerd moves on to the server.
    let hosts = work.path().join("down");
    fs::create_dir(&hosts).unwrap();
    let mirror = format!("upstream.test={}", upstream.url());
    run_ok(&[
        "apply",
        "--hosts-dir",
        hosts.to_str().unwrap(),
        "--endpoint",
        &dead,
        "--owner",
        "registry/local",
        "--mirror",
        &mirror,
    ]);
    let containerd = Containerd::start();
    let pull = containerd.pull(&hosts, &reference);
    assert!(pull.ok, "fallback to the server: {}", pull.output);
    containerd.assert_holds(&reference, &layout, &manifest);
    println!(
        "pull with the node instance down (fallback to server): {:?}",
        pull.elapsed
    );
    assert!(
        pull.elapsed < FALLBACK_LIMIT,
        "the fallback took {:?}",
        pull.elapsed
    );
}

#[test]
fn another_tools_hosts_file_is_kept_and_restored_exactly() {
    let work = tempfile::tempdir().unwrap();
    let (upstream, layout, manifest) = registry_with_image(work.path());
    let node = BerthRegistry::start(RegistryOptions::new());
    let hosts = work.path().join("certs.d");
    // Another tool's configuration: its own file for the host (mode 0600,
    // pointing straight at the upstream), a CA-only host, an unrelated host.
    let theirs = hosts.join("upstream.test");
    fs::create_dir_all(&theirs).unwrap();
    let their_file = format!(
        "# another tool's file\nserver = \"{}\"\n\n[host.\"{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
        upstream.url(),
        upstream.url()
    );
    fs::write(theirs.join("hosts.toml"), &their_file).unwrap();
    fs::set_permissions(theirs.join("hosts.toml"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::create_dir_all(hosts.join("quay.io")).unwrap();
    fs::write(hosts.join("quay.io/ca.crt"), "not really a certificate\n").unwrap();
    fs::create_dir_all(hosts.join("example.com:5000")).unwrap();
    fs::write(
        hosts.join("example.com:5000/hosts.toml"),
        "server = \"https://example.com:5000\"\n",
    )
    .unwrap();
    fs::set_permissions(
        hosts.join("example.com:5000"),
        fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    let before = snapshot(&hosts);

    let endpoint = node.url();
    let args = |mirrors: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "apply",
            "--hosts-dir",
            hosts.to_str().unwrap(),
            "--endpoint",
        ]
        .into_iter()
        .chain([
            endpoint.as_str(),
            "--owner",
            "registry/local",
            "--own-name",
            "berth.test",
        ])
        .map(str::to_owned)
        .collect();
        for m in mirrors {
            a.extend(["--mirror".to_owned(), (*m).to_owned()]);
        }
        a
    };
    let printed = run_ok(&args(&["upstream.test", "quay.io", "ghcr.io"]));
    assert!(printed.contains("original kept"), "{printed}");
    assert_eq!(
        fs::read_to_string(theirs.join("hosts.toml.berth-original")).unwrap(),
        their_file
    );
    let written = fs::read_to_string(theirs.join("hosts.toml")).unwrap();
    assert!(
        written.starts_with("# berth-registry containerd-hosts: owner=registry/local dir=found\n"),
        "{written}"
    );
    // Applying again changes nothing; dropping mirrors takes back only those.
    let applied = snapshot(&hosts);
    run_ok(&args(&["upstream.test", "quay.io", "ghcr.io"]));
    assert_eq!(snapshot(&hosts), applied);
    run_ok(&args(&["upstream.test"]));
    let now = snapshot(&hosts);
    assert!(!hosts.join("ghcr.io").exists());
    assert_eq!(
        now.get(Path::new("quay.io/ca.crt")),
        before.get(Path::new("quay.io/ca.crt"))
    );
    assert!(!hosts.join("quay.io/hosts.toml").exists());

    // Another owner cannot take over a host: refused, nothing changed.
    let out = hosts_writer(&[
        "apply",
        "--hosts-dir",
        hosts.to_str().unwrap(),
        "--endpoint",
        &node.url(),
        "--owner",
        "other/registry",
        "--mirror",
        "upstream.test",
        "--mirror",
        "zz.test",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("upstream.test") && stderr.contains("registry/local"),
        "{stderr}"
    );
    assert_eq!(snapshot(&hosts), now);

    run_ok(&[
        "remove",
        "--hosts-dir",
        hosts.to_str().unwrap(),
        "--owner",
        "registry/local",
    ]);
    assert_eq!(snapshot(&hosts), before, "the hosts directory after remove");

    // containerd reads the other tool's file again: pulls go to the upstream.
    let containerd = Containerd::start();
    let reference = format!("upstream.test/{REPO}:{TAG}");
    let pull = containerd.pull(&hosts, &reference);
    assert!(pull.ok, "{}", pull.output);
    containerd.assert_holds(&reference, &layout, &manifest);
}

/// Runs the writer in a private mount namespace where each of `read_only`
/// is a read-only bind mount of itself: the writer meets a read-only
/// filesystem (EROFS) there, while the test's own view stays writable and
/// nothing outlives the command.
fn run_with_read_only(read_only: &[&Path], args: &[&str]) -> Output {
    let writer = hosts_writer_command(args);
    let mut script = String::from("set -e\n");
    for (i, _) in read_only.iter().enumerate() {
        let n = i + 1;
        script.push_str(&format!(
            "mount --bind \"${n}\" \"${n}\"\nmount -o remount,bind,ro \"${n}\"\n"
        ));
    }
    script.push_str(&format!("shift {}\nexec \"$@\"\n", read_only.len()));
    let mut command = std::process::Command::new("unshare");
    command
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "sh",
        ])
        .args(read_only)
        .arg(writer.get_program())
        .args(writer.get_args())
        .env_clear()
        .env("PATH", berth_tests::tools::child_path());
    command.output().expect("run unshare (needs root)")
}

#[test]
fn an_unwritable_hosts_directory_fails_naming_the_path_and_changes_nothing() {
    let work = tempfile::tempdir().unwrap();
    let hosts = work.path().join("certs.d");
    fs::create_dir_all(hosts.join("ghcr.io")).unwrap();
    fs::write(
        hosts.join("ghcr.io/hosts.toml"),
        "server = \"https://ghcr.io\"\n",
    )
    .unwrap();
    let before = snapshot(&hosts);
    let dir = hosts.to_str().unwrap();
    let apply = [
        "apply",
        "--hosts-dir",
        dir,
        "--endpoint",
        "http://127.0.0.1:5000",
        "--owner",
        "registry/local",
        "--mirror",
        "docker.io",
        "--mirror",
        "ghcr.io",
    ];

    // One host's directory is read-only: docker.io (staged first) must not
    // appear either.
    let out = run_with_read_only(&[&hosts.join("ghcr.io")], &apply);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        stderr.contains(&format!("{dir}/ghcr.io/")) && stderr.contains("Read-only file system"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert_eq!(
        stderr.matches("Read-only").count(),
        1,
        "said once: {stderr}"
    );
    assert_eq!(snapshot(&hosts), before);

    // The whole directory is read-only.
    let out = run_with_read_only(&[&hosts], &apply);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        stderr.contains(dir) && stderr.contains("Read-only file system"),
        "{stderr}"
    );
    assert_eq!(snapshot(&hosts), before);

    // A hosts directory below a regular file cannot exist at all.
    let file = work.path().join("file");
    fs::write(&file, "").unwrap();
    let below = file.join("certs.d");
    let out = hosts_writer(&[
        "apply",
        "--hosts-dir",
        below.to_str().unwrap(),
        "--endpoint",
        "http://127.0.0.1:5000",
        "--owner",
        "registry/local",
        "--mirror",
        "docker.io",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(below.to_str().unwrap()), "{stderr}");
    assert_eq!(fs::read(&file).unwrap(), b"");
}

#[test]
fn invalid_host_names_are_refused_and_nothing_is_written() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().to_str().unwrap();
    for (flag, bad) in [
        ("--mirror", "../etc"),
        ("--mirror", ".."),
        ("--mirror", "docker.io/library"),
        ("--mirror", "docker io"),
        ("--mirror", ""),
        ("--mirror", "https://docker.io"),
        ("--mirror", "ghcr.io:99999"),
        ("--mirror", "docker.io=not-a-url"),
        ("--own-name", "berth/local"),
        ("--own-name", " berth.local"),
    ] {
        let out = hosts_writer(&[
            "apply",
            "--hosts-dir",
            dir,
            "--endpoint",
            "http://127.0.0.1:5000",
            "--owner",
            "registry/local",
            "--mirror",
            "ghcr.io",
            flag,
            bad,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {bad:?} was accepted");
        assert!(
            stderr.starts_with("error: invalid host") || stderr.starts_with("error: invalid URL"),
            "{flag} {bad:?}: {stderr}"
        );
        assert!(
            snapshot(work.path()).is_empty(),
            "{flag} {bad:?} wrote something"
        );
    }
}

#[test]
fn remove_with_hold_takes_back_then_runs_until_sigterm() {
    let work = tempfile::tempdir().unwrap();
    let hosts = work.path().join("certs.d");
    fs::create_dir(&hosts).unwrap();
    let dir = hosts.to_str().unwrap();
    run_ok(&[
        "apply",
        "--hosts-dir",
        dir,
        "--endpoint",
        "http://127.0.0.1:5000",
        "--owner",
        "registry/local",
        "--mirror",
        "docker.io",
    ]);
    let command = hosts_writer_command(&[
        "remove",
        "--hosts-dir",
        dir,
        "--owner",
        "registry/local",
        "--hold",
    ]);
    let mut process = ServerProcess::spawn(command, &work.path().join("remove.log"));
    let holding = process.wait_ready_with("the hold message", 200, || {
        if read_log(&work.path().join("remove.log")).contains("holding until SIGTERM") {
            Ok(200)
        } else {
            Err("not yet".to_owned())
        }
    });
    if let Err(StartError::AddrInUse(msg) | StartError::Failed(msg)) = holding {
        panic!("remove --hold: {msg}");
    }
    assert!(snapshot(&hosts).is_empty(), "removed before holding");
    // Still running a moment later; SIGTERM ends it cleanly.
    assert_eq!(process.wait_exit(Duration::from_millis(500)), None);
    process.signal("TERM");
    let status = process
        .wait_exit(Duration::from_secs(5))
        .expect("exits on SIGTERM");
    assert!(status.success(), "{status}: {}", process.log());
}

#[test]
fn a_ca_certificate_in_the_host_directory_stays_trusted_for_the_server() {
    let work = tempfile::tempdir().unwrap();
    let ca = TestCa::new("berth-tests upstream CA");
    let (cert, key) = (work.path().join("tls.crt"), work.path().join("tls.key"));
    ca.server_cert("upstream").write(&cert, &key);
    let upstream = BerthRegistry::start(RegistryOptions::new().tls(&cert, &key, ca.cert_pem()));
    let (layout, manifest) = single_image_layout(&work.path().join("layout"), TAG, &[4096]);
    Skopeo::new().copy(
        &layout.reference(TAG),
        &docker_ref(&upstream.addr(), REPO, TAG),
    );
    let host = upstream.addr();
    let mirror = format!("{host}={}", upstream.url());
    let dead = format!("http://127.0.0.1:{}", free_port());
    let reference = format!("{host}/{REPO}:{TAG}");
    let containerd = Containerd::start();

    // The upstream's CA in Docker's pattern, as a node trusting a private
    // registry has it: with Berth's file in place (and the node instance
    // down), the fallback to the server still verifies against it.
    let hosts = work.path().join("with-ca");
    fs::create_dir_all(hosts.join(&host)).unwrap();
    fs::write(hosts.join(&host).join("ca.crt"), ca.cert_pem()).unwrap();
    let before = snapshot(&hosts);
    let apply = |hosts: &Path| {
        run_ok(&[
            "apply",
            "--hosts-dir",
            hosts.to_str().unwrap(),
            "--endpoint",
            &dead,
            "--owner",
            "registry/local",
            "--mirror",
            &mirror,
        ])
    };
    apply(&hosts);
    let written = fs::read_to_string(hosts.join(&host).join("hosts.toml")).unwrap();
    assert!(written.contains("ca = [\"ca.crt\"]"), "{written}");
    let pull = containerd.pull(&hosts, &reference);
    assert!(pull.ok, "{}", pull.output);
    containerd.assert_holds(&reference, &layout, &manifest);
    run_ok(&[
        "remove",
        "--hosts-dir",
        hosts.to_str().unwrap(),
        "--owner",
        "registry/local",
    ]);
    assert_eq!(snapshot(&hosts), before);

    // Control: without the CA file the same fallback fails verification.
    let bare = work.path().join("without-ca");
    fs::create_dir(&bare).unwrap();
    apply(&bare);
    let pull = containerd.pull(&bare, &format!("{host}/{REPO}@{}", manifest.digest));
    assert!(!pull.ok, "pulled without trusting the CA: {}", pull.output);
    assert!(pull.output.contains("certificate"), "{}", pull.output);
}
