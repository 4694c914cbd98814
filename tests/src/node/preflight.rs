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
