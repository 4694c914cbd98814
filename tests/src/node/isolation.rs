//! The node's own network and mount namespaces.
//!
//! A hostPort rule (CNI portmap) DNATs every connection to
//! `127.0.0.1:<port>`, and kubelet, kube-proxy and CNI rewrite iptables and
//! `net.*` sysctls. Run on the machine's own network, a test node would catch
//! other processes' traffic and leave rules behind. So the test process
//! moves itself into a new network namespace before it starts anything:
//! inside it `127.0.0.1` is the node's loopback, the node's address
//! ([`NODE_IP`], from the documentation range) sits on that loopback, and
//! everything the node changes in the network goes when its processes do.
//!
//! It also moves into a mount namespace of its own, with propagation to the
//! machine cut: the node's mounts (pod volumes, container root filesystems,
//! and the directories bind-mounted over paths kubelet and containerd
//! hard-code, such as `/var/lib/kubelet`) are never seen outside it, and
//! vanish with it even after a crash.

use std::ffi::CString;
use std::fs;
use std::path::{Path, PathBuf};

use crate::netns::ip;

/// The node's address: on the namespace's loopback, advertised by the API
/// server (pods reach it through their bridge's gateway) and recorded as the
/// Node's InternalIP. From TEST-NET-1, so it never leaves the machine.
pub const NODE_IP: &str = "192.0.2.1";

/// Moves this process into new network and mount namespaces, with the
/// loopback up and [`NODE_IP`] on it. Must run while the process has a
/// single thread (the kernel refuses a new mount namespace otherwise).
pub fn enter_own_namespaces() -> Result<(), String> {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    if !status
        .lines()
        .any(|l| l.split_whitespace().eq(["Threads:", "1"]))
    {
        return Err("the test node must be started before the test process starts threads".into());
    }
    // SAFETY: unshare and mount take no pointers we do not own.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNET | libc::CLONE_NEWNS) != 0 {
            return Err(format!(
                "unshare(CLONE_NEWNET | CLONE_NEWNS): {} (needs root with CAP_SYS_ADMIN)",
                std::io::Error::last_os_error()
            ));
        }
        let root = CString::new("/").expect("no NUL");
        if libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return Err(format!(
                "making / private in the node's mount namespace: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    ip(&["link", "set", "lo", "up"])?;
    ip(&["addr", "add", &format!("{NODE_IP}/32"), "dev", "lo"])?;
    Ok(())
}

/// Bind-mounts `source` over `target` (both directories) in the node's mount
/// namespace.
pub fn bind(source: &Path, target: &Path) -> Result<(), String> {
    let c = |p: &Path| CString::new(p.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string());
    let (src, dst) = (c(source)?, c(target)?);
    // SAFETY: the strings outlive the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "bind {} over {}: {}",
            source.display(),
            target.display(),
            std::io::Error::last_os_error()
        ))
    }
}

/// Every mount point at or below one of `dirs`, deepest first.
pub fn mounts_below(dirs: &[&Path]) -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mount_point)
        .filter(|p| dirs.iter().any(|d| p.starts_with(d)))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    points
}

/// Detaches every mount at or below `dirs`; returns what stayed mounted.
pub fn unmount_below(dirs: &[&Path]) -> Vec<PathBuf> {
    for point in mounts_below(dirs) {
        if let Ok(path) = CString::new(point.as_os_str().as_encoded_bytes()) {
            // SAFETY: the string outlives the call.
            unsafe {
                libc::umount2(path.as_ptr(), libc::MNT_DETACH);
            }
        }
    }
    mounts_below(dirs)
}

/// `/proc/self/mountinfo` writes space, tab, newline and backslash as octal escapes.
fn unescape_mount_point(field: &str) -> PathBuf {
    let mut out = String::new();
    let mut rest = field;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let code = rest
            .get(at + 1..at + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(byte) => {
                out.push(byte as char);
                rest = &rest[at + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    PathBuf::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_unescaped() {
        assert_eq!(
            unescape_mount_point("/var/lib/a\\040b"),
            PathBuf::from("/var/lib/a b")
        );
        assert_eq!(unescape_mount_point("/plain"), PathBuf::from("/plain"));
    }
}
