//! The node's configuration files, as pure functions of where the node keeps
//! its state: containerd's config, the CNI network, kubelet's
//! KubeletConfiguration, and kubeconfigs. Comments say why a setting is
//! needed where it is not the default.

use std::path::Path;

use base64::Engine as _;

/// The pod network: one bridge on the node.
pub const POD_CIDR: &str = "10.244.0.0/24";
/// The Service network; the `kubernetes` Service gets its first address.
pub const SERVICE_CIDR: &str = "10.0.0.0/24";
/// The `kubernetes` Service's address.
pub const KUBERNETES_SERVICE_IP: &str = "10.0.0.1";
/// The API server's port.
pub const APISERVER_PORT: u16 = 6443;
/// containerd's socket, under `/run/containerd` (a directory of the node's
/// bind-mounted there, where containerd 1.6 puts its shim sockets anyway).
pub const CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";
/// The sandbox (pause) image, built by `make images`.
pub const PAUSE_IMAGE: &str = "berth.test/pause:1";

/// containerd's configuration (version 2, containerd 1.6 and 1.7).
pub fn containerd_config(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/containerd/root"
state = "{d}/containerd/state"
# Snapshotters this machine cannot run only log errors at every start.
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = "{CONTAINERD_SOCKET}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # root here lacks CAP_SYS_RESOURCE: without this every sandbox fails to start.
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        Root = "{d}/runc"
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/cni/net.d"
    max_conf_num = 1

  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{d}/containerd/certs.d"
"#
    )
}

/// The pod network: a bridge with the node as gateway (no masquerading:
/// traffic never leaves the node), and portmap for hostPorts.
pub fn cni_conflist(dir: &Path) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "berth-node",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "berth0",
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": dir.join("cni/ipam"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ],
    })
    .to_string()
}

/// kubelet's configuration. `pki` holds `ca.crt` and the kubelet's serving
/// pair.
pub fn kubelet_config(dir: &Path, pki: &Path) -> String {
    let p = |name: &str| pki.join(name).display().to_string();
    let d = dir.display();
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: {ca}
authorization:
  mode: Webhook
tlsCertFile: {cert}
tlsPrivateKeyFile: {key}
containerRuntimeEndpoint: unix://{CONTAINERD_SOCKET}
cgroupDriver: cgroupfs
cgroupRoot: /{cgroup_root}
# This machine kind mounts cgroup v1; Kubernetes 1.34 still runs on it when told to.
failCgroupV1: false
failSwapOn: false
staticPodPath: {d}/manifests
resolvConf: {d}/resolv.conf
# Images are imported by the harness and never pulled from outside: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# Absolute floors: a percentage of a large shared disk evicts pods while
# gigabytes are still free.
evictionHard:
  memory.available: 50Mi
  nodefs.available: 256Mi
  nodefs.inodesFree: 1%
  imagefs.available: 256Mi
nodeStatusUpdateFrequency: 5s
# How often mounted Secrets and ConfigMaps are refreshed, among other things.
syncFrequency: 10s
serializeImagePulls: false
maxPods: 32
"#,
        ca = p("ca.crt"),
        cert = p("kubelet.crt"),
        key = p("kubelet.key"),
        cgroup_root = super::ledger::CGROUP_ROOT,
    )
}

/// A kubeconfig for the API server on `server`, authenticated by the client
/// pair `cert`/`key`, trusting `ca`.
pub fn kubeconfig(server: &str, ca: &str, cert: &str, key: &str) -> String {
    let b64 = |pem: &str| base64::engine::general_purpose::STANDARD.encode(pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: node\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\nusers:\n- name: user\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: node\n  context:\n    cluster: node\n    user: user\ncurrent-context: node\n",
        b64(ca),
        b64(cert),
        b64(key)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cni_network_keeps_state_in_the_node_directory() {
        let conf: serde_json::Value =
            serde_json::from_str(&cni_conflist(Path::new("/node"))).unwrap();
        assert_eq!(conf["plugins"][0]["ipam"]["dataDir"], "/node/cni/ipam");
        assert_eq!(conf["plugins"][1]["type"], "portmap");
    }

    #[test]
    fn kubelet_runs_under_the_node_cgroup_root() {
        let config = kubelet_config(Path::new("/node"), Path::new("/node/pki"));
        assert!(config.contains("cgroupRoot: /berth-node\n"), "{config}");
        assert!(config.contains("clientCAFile: /node/pki/ca.crt\n"));
    }
}
