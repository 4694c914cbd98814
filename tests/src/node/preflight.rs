//! What the test node needs from the machine, checked before anything
//! starts, so that a missing part fails with a message naming it instead of
//! a timeout deep in kubelet's log.

use std::fs;
use std::path::Path;
use std::process::Command;

use super::ledger::cgroup_hierarchies;

/// Checks that must hold before the node's namespaces are made: root and
/// the binaries and images the node runs. Returns every problem found.
pub fn machine(images: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        problems.push("the test node needs root (cgroups, namespaces, mounts, iptables)".into());
    }
    for tool in [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kube-proxy",
        "kubelet",
        "kubectl",
        "etcd",
        "helm",
        "crictl",
        "skopeo",
    ] {
        let path = crate::tools::tools_dir().join(tool);
        if !path.is_file() {
            problems.push(format!("{} is missing: run `make tools`", path.display()));
        }
    }
    for binary in [
        "/usr/bin/containerd",
        "/usr/bin/containerd-shim-runc-v2",
        "/usr/bin/ctr",
        "/usr/sbin/runc",
        "/usr/sbin/conntrack",
        "/usr/lib/cni/bridge",
        "/usr/lib/cni/host-local",
        "/usr/lib/cni/portmap",
        "/usr/lib/cni/loopback",
    ] {
        if !Path::new(binary).is_file() {
            problems.push(format!(
                "{binary} is missing: run `make tools` (Debian containerd, runc, containernetworking-plugins, conntrack)"
            ));
        }
    }
    for image in ["pause", "busybox", "berth-registry", "berth-operator"] {
        if !images.join(image).join("index.json").is_file() {
            problems.push(format!(
                "image {image} is missing in {}: run `make images`",
                images.display()
            ));
        }
    }
    if let Some(free) = free_bytes(Path::new("/var/tmp"))
        && free < MIN_FREE_BYTES
    {
        problems.push(format!(
                "/var/tmp has {} MiB free; the node needs {} MiB (containerd's content, the pods' logs)",
                free >> 20,
                MIN_FREE_BYTES >> 20
            ));
    }
    let filesystems = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems
        .lines()
        .any(|l| l.split_whitespace().last() == Some("overlay"))
    {
        problems.push(
            "the kernel has no overlay filesystem (containerd's snapshotter needs it)".into(),
        );
    }
    let hierarchies = cgroup_hierarchies();
    if hierarchies.is_empty() {
        problems.push("no cgroup hierarchy under /sys/fs/cgroup".into());
    }
    for hierarchy in hierarchies {
        let probe = hierarchy.join("berth-node-probe");
        match fs::create_dir(&probe) {
            Ok(()) => {
                let _ = fs::remove_dir(&probe);
            }
            Err(e) => problems.push(format!(
                "cannot create a cgroup in {}: {e}",
                hierarchy.display()
            )),
        }
    }
    problems
}

/// Free space the node needs for its data directory: the imported images,
/// containerd's snapshots and the registries' content.
const MIN_FREE_BYTES: u64 = 2 << 30;

/// Bytes available to an unprivileged writer on the filesystem of `path`.
fn free_bytes(path: &Path) -> Option<u64> {
    let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is NUL-terminated and `stat` is written by the call.
    if unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `stat`.
    let stat = unsafe { stat.assume_init() };
    Some(stat.f_bavail * stat.f_frsize)
}

/// Checks inside the node's namespaces: iptables works there.
pub fn namespaces() -> Vec<String> {
    match Command::new("iptables").args(["-w", "5", "-S"]).output() {
        Ok(out) if out.status.success() => Vec::new(),
        Ok(out) => vec![format!(
            "iptables does not work in the node's network namespace: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )],
        Err(e) => vec![format!("iptables cannot run: {e} (install iptables)")],
    }
}
