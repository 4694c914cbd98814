//! Another host on this machine: a network namespace joined to the test's
//! own by a veth pair, each end with its own address, for tests of what a
//! registry accepts from clients that are not on its host.
//!
//! Made with `ip` (Debian's iproute2) and removed on drop; deleting the
//! namespace deletes the veth pair with it.

use std::process::Command;

/// A network namespace with a veth link to the test process's namespace.
#[derive(Debug)]
pub struct OtherHost {
    name: String,
    /// The address of the test process's end of the link.
    pub local_ip: String,
    /// The address of the other host's end.
    pub remote_ip: String,
}

/// Runs `ip` (iproute2) with `args`; the error says what failed and why.
pub(crate) fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e} (run `make tools`: iproute2)", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl OtherHost {
    /// Makes the namespace and its link, with addresses from the
    /// benchmarking range 198.18.0.0/15, one /30 per process. Needs root.
    pub fn new() -> Result<OtherHost, String> {
        let id = std::process::id();
        let name = format!("berth-other-{id}");
        let (host, peer) = (format!("bo{id}h"), format!("bo{id}p"));
        let subnet = (id % (1 << 14)) * 4;
        let addr = |n: u32| {
            let a = subnet + n;
            format!("198.{}.{}.{}", 18 + (a >> 16), (a >> 8) & 255, a & 255)
        };
        let other = OtherHost {
            name: name.clone(),
            local_ip: addr(1),
            remote_ip: addr(2),
        };
        let _ = ip(&["netns", "delete", &name]);
        ip(&["netns", "add", &name])?;
        let peer_ns = ["netns", "exec", &name, "ip"];
        let in_peer = |args: &[&str]| ip(&[&peer_ns[..], args].concat());
        ip(&[
            "link", "add", &host, "type", "veth", "peer", "name", &peer, "netns", &name,
        ])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/30", other.local_ip),
            "dev",
            &host,
        ])?;
        ip(&["link", "set", &host, "up"])?;
        in_peer(&[
            "addr",
            "add",
            &format!("{}/30", other.remote_ip),
            "dev",
            &peer,
        ])?;
        in_peer(&["link", "set", &peer, "up"])?;
        in_peer(&["link", "set", "lo", "up"])?;
        Ok(other)
    }

    /// The namespace's name, for `ip netns exec`.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for OtherHost {
    fn drop(&mut self) {
        let _ = ip(&["netns", "delete", &self.name]);
    }
}
