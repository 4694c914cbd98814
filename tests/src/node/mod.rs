//! A real single-node Kubernetes cluster for the tests: etcd,
//! kube-apiserver, kube-controller-manager, kube-scheduler, containerd (with
//! runc and the CNI bridge and portmap plugins), kubelet and kube-proxy, all
//! from `make tools`, running the images `make images` built (imported into
//! containerd, so nothing is pulled from outside).
//!
//! One node per machine (kubelet's ports, cgroups and sysctls are
//! machine-wide), started once per test run by the test binary that needs
//! it and shared by its tests one at a time. The node runs in network and
//! mount namespaces of its own ([`isolation`]); what it still changes on the
//! machine is written down first ([`ledger`]) and taken back by
//! [`Node::stop`], or by the next run when this one crashed. Clients (kubectl,
//! helm, skopeo, crictl) run inside the node's namespaces too, so
//! `127.0.0.1:<hostPort>` reaches the node's pods, as on a real node.

pub mod files;
mod isolation;
mod ledger;
mod preflight;

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use rcgen::KeyPair;
use serde_json::Value;

use crate::certs::{CertifiedKey, TestCa};
use crate::tools::{tools_dir, workspace_root};
pub use isolation::NODE_IP;
use ledger::Ledger;

/// The ledger and the lock that keeps a second node off this machine. On a
/// tmpfs: after a reboot there is nothing left to undo.
const STATE_DIR: &str = "/run/berth-node";
/// The node's state: certificates, configuration, logs, containerd's images
/// and containers, kubelet's pods, the hostPath volumes.
const DATA_DIR: &str = "/var/tmp/berth-node";
/// Paths that kubelet, containerd and CNI use whatever their configuration
/// says, and the example Registry's hostPath: each gets a directory of the
/// node's data bind-mounted over it, so nothing lands on the machine.
const REDIRECTED: &[(&str, &str)] = &[
    ("/var/lib/kubelet", "kubelet"),
    ("/var/log/pods", "log/pods"),
    ("/var/log/containers", "log/containers"),
    ("/var/lib/cni", "cni/lib"),
    ("/run/containerd", "run-containerd"),
    ("/var/lib/berth-registry", "host/var/lib/berth-registry"),
];
/// How long each part gets to become ready on a busy 2-core machine.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// The name kubelet registers the node under (the API server reaches the
/// kubelet at this name, which resolves to 127.0.0.1).
pub const NODE_NAME: &str = "localhost";

/// A process the node or a test started, stopped at [`Node::stop`].
struct Running {
    name: String,
    child: Child,
}

/// The running node.
pub struct Node {
    dir: PathBuf,
    kubeconfig: PathBuf,
    ledger: Mutex<Ledger>,
    processes: Mutex<Vec<Running>>,
    _lock: File,
}

impl Node {
    /// Checks the machine, undoes what a crashed earlier run left, moves this
    /// process into the node's namespaces and starts every part, returning
    /// once the node is Ready. Must be called before the process starts any
    /// thread. Errors name what is missing or what did not come up, with the
    /// logs of the part at fault.
    pub fn start() -> Result<Node, String> {
        let started = Instant::now();
        let images = images_dir();
        let problems = preflight::machine(&images);
        if !problems.is_empty() {
            return Err(format!(
                "the test node cannot start on this machine:\n  {}",
                problems.join("\n  ")
            ));
        }
        let machine_lock = take_machine_lock()?;
        undo_left_behind()?;

        isolation::enter_own_namespaces()?;
        let problems = preflight::namespaces();
        if !problems.is_empty() {
            return Err(problems.join("\n"));
        }
        let dir = PathBuf::from(DATA_DIR);
        let mut ledger = Ledger::new(&ledger_path());
        ledger.record_netns();
        ledger.record_sysctls();
        ledger.make_data_dir(&dir);
        ledger.make_cgroup_root();
        for (target, source) in REDIRECTED {
            let source = dir.join(source);
            fs::create_dir_all(&source).map_err(|e| format!("{}: {e}", source.display()))?;
            ledger.make_dir(Path::new(target));
            isolation::bind(&source, Path::new(target))?;
        }

        let node = Node {
            kubeconfig: dir.join("kubeconfig"),
            dir,
            ledger: Mutex::new(ledger),
            processes: Mutex::new(Vec::new()),
            _lock: machine_lock,
        };
        node.write_files();
        node.start_parts(&images)?;
        log(&format!(
            "node {NODE_NAME} Ready {:.1} s after start",
            started.elapsed().as_secs_f64()
        ));
        Ok(node)
    }

    /// The admin kubeconfig (group `system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The node's data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `program` as a client of the node runs it: the tools first on `PATH`
    /// (`cargo` as [`crate::tools::cargo`] has it), the admin kubeconfig, a
    /// home of the node's, in the workspace root (the README's commands name
    /// `charts/berth` and `examples/`).
    pub fn command(&self, program: &str) -> Command {
        let home = self.dir.join("home");
        let mut command = if program == "cargo" {
            crate::tools::cargo()
        } else {
            let mut command = Command::new(program);
            command.env_clear().env("PATH", crate::tools::child_path());
            command
        };
        command
            .current_dir(workspace_root())
            .env("HOME", &home)
            .env("XDG_RUNTIME_DIR", home.join("run"))
            .env("TMPDIR", home.join("tmp"))
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::null());
        command
    }

    /// Runs `line`, a shell command line as the README shows it (words
    /// separated by spaces, no quoting), and returns its standard output;
    /// panics with everything it printed when it fails. A line ending in
    /// `&` is started in the background and stopped with the node.
    pub fn run(&self, line: &str) -> String {
        self.run_in(&workspace_root(), line)
    }

    /// [`Node::run`] in the working directory `dir`.
    pub fn run_in(&self, dir: &Path, line: &str) -> String {
        let (line, background) = match line.trim().strip_suffix('&') {
            Some(rest) => (rest.trim(), true),
            None => (line.trim(), false),
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        let mut command = self.command(words[0]);
        command.current_dir(dir).args(&words[1..]);
        if background {
            self.spawn(words[0], command);
            return String::new();
        }
        let output = command.output().unwrap_or_else(|e| panic!("`{line}`: {e}"));
        checked(line, output)
    }

    /// `kubectl ARGS`; its standard output, or a panic with what it said.
    pub fn kubectl(&self, args: &[&str]) -> String {
        checked(
            &format!("kubectl {}", args.join(" ")),
            self.try_kubectl(args),
        )
    }

    /// `kubectl ARGS`, whatever it returns.
    pub fn try_kubectl(&self, args: &[&str]) -> Output {
        self.command("kubectl")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("kubectl: {e}"))
    }

    /// `kubectl get ARGS -o json`, parsed; `None` when kubectl fails (for
    /// example, the object does not exist).
    pub fn get(&self, args: &[&str]) -> Option<Value> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let output = self.try_kubectl(&all);
        if !output.status.success() {
            return None;
        }
        serde_json::from_slice(&output.stdout).ok()
    }

    /// `kubectl apply -f -` of `yaml`.
    pub fn apply(&self, yaml: &str) -> String {
        let mut child = self
            .command("kubectl")
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("kubectl: {e}"));
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(yaml.as_bytes())
                .unwrap_or_else(|e| panic!("kubectl apply: {e}"));
        }
        let output = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("kubectl apply: {e}"));
        checked(&format!("kubectl apply -f - <<EOF\n{yaml}EOF"), output)
    }

    /// Starts `command` in the background, logging to `logs/<name>.log`; it
    /// is stopped with the node (or by [`Node::stop_process`]).
    pub fn spawn(&self, name: &str, mut command: Command) -> u32 {
        let log = self.log_path(name);
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let err = out.try_clone().expect("clone a log file handle");
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let pid = child.id();
        lock(&self.ledger).record_process(pid);
        lock(&self.processes).push(Running {
            name: name.to_owned(),
            child,
        });
        pid
    }

    /// Stops the background process started as `name` (SIGTERM, then SIGKILL
    /// after 10 s).
    pub fn stop_process(&self, name: &str) {
        let mut processes = lock(&self.processes);
        let (mine, others): (Vec<Running>, Vec<Running>) =
            processes.drain(..).partition(|p| p.name == name);
        *processes = others;
        drop(processes);
        stop_all(mine, Duration::from_secs(10));
    }

    /// What `name` logged so far.
    pub fn log_of(&self, name: &str) -> String {
        fs::read_to_string(self.log_path(name)).unwrap_or_default()
    }

    fn log_path(&self, name: &str) -> PathBuf {
        let dir = self.dir.join("logs");
        let _ = fs::create_dir_all(&dir);
        dir.join(format!("{name}.log"))
    }

    /// Polls `check` every 250 ms until it gives a value; after `timeout`
    /// panics naming `what`, with the node's state.
    pub fn wait<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = check() {
                return value;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}\n{}",
                    self.diagnostics()
                );
            }
            thread::sleep(Duration::from_millis(250));
        }
    }

    /// The node's state for a failure message: pods, recent events, and the
    /// tails of kubelet's and containerd's logs.
    pub fn diagnostics(&self) -> String {
        let text = |output: Output| {
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        };
        let pods = text(self.try_kubectl(&["get", "pods", "-A", "-o", "wide"]));
        let events = text(self.try_kubectl(&["get", "events", "-A", "--sort-by=.lastTimestamp"]));
        let tail = |name: &str| {
            let log = self.log_of(name);
            let lines: Vec<&str> = log.lines().rev().take(25).collect();
            lines.into_iter().rev().collect::<Vec<_>>().join("\n")
        };
        format!(
            "--- pods\n{pods}\n--- events\n{}\n--- kubelet\n{}\n--- containerd\n{}",
            last_lines(&events, 30),
            tail("kubelet"),
            tail("containerd")
        )
    }

    /// Imports the OCI layout `layout` into containerd's `k8s.io` namespace,
    /// under the name its index carries.
    pub fn import_image(&self, layout: &Path) -> Result<(), String> {
        let name = layout
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let archive = self.dir.join("images").join(format!("{name}.tar"));
        let _ = fs::create_dir_all(archive.parent().expect("has a parent"));
        let tar = Command::new("tar")
            .arg("-C")
            .arg(layout)
            .arg("-cf")
            .arg(&archive)
            .arg(".")
            .output()
            .map_err(|e| format!("tar: {e}"))?;
        if !tar.status.success() {
            return Err(format!(
                "tar {}: {}",
                layout.display(),
                String::from_utf8_lossy(&tar.stderr)
            ));
        }
        let output = Command::new("ctr")
            .args([
                "--address",
                files::CONTAINERD_SOCKET,
                "-n",
                "k8s.io",
                "images",
                "import",
            ])
            .arg(&archive)
            .output()
            .map_err(|e| format!("ctr: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "ctr images import {}: {}",
                archive.display(),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    /// Stops everything the node started and takes back every change it made
    /// to the machine; returns what could not be undone.
    pub fn stop(self) -> Vec<String> {
        let started = Instant::now();
        let mut processes: Vec<Running> = lock(&self.processes).drain(..).collect();
        // kubelet first, or it starts again the pods removed below.
        let (kubelet, others): (Vec<Running>, Vec<Running>) =
            processes.drain(..).partition(|p| p.name == "kubelet");
        stop_all(kubelet, Duration::from_secs(10));
        // Removing the pods through the runtime runs CNI DEL for each.
        let _ = self
            .command("crictl")
            .args([
                "--runtime-endpoint",
                &format!("unix://{}", files::CONTAINERD_SOCKET),
                "rmp",
                "-fa",
            ])
            .output();
        // The control plane needs no graceful stop: its state goes with the node.
        stop_all(others, Duration::from_secs(3));
        let mut problems = Vec::new();
        let targets: Vec<&Path> = REDIRECTED.iter().map(|(t, _)| Path::new(*t)).collect();
        let mut mounted: Vec<&Path> = targets.clone();
        mounted.push(&self.dir);
        let stuck = isolation::unmount_below(&mounted);
        if !stuck.is_empty() {
            problems.push(format!("still mounted: {stuck:?}"));
            // Removing the data directory would reach into those mounts.
            return problems;
        }
        problems.extend(lock(&self.ledger).undo());
        log(&format!(
            "node stopped and machine restored in {:.1} s",
            started.elapsed().as_secs_f64()
        ));
        problems
    }

    fn write_files(&self) {
        let dir = &self.dir;
        let pki = dir.join("pki");
        for sub in [
            "pki",
            "manifests",
            "cni/net.d",
            "containerd/certs.d",
            "home/run",
            "home/tmp",
            "logs",
        ] {
            fs::create_dir_all(dir.join(sub)).unwrap_or_else(|e| panic!("{sub}: {e}"));
        }
        let ca = TestCa::new("berth-node-ca");
        ca.write_cert(&pki.join("ca.crt"));
        let write_pair = |name: &str, pair: &CertifiedKey| {
            pair.write(
                &pki.join(format!("{name}.crt")),
                &pki.join(format!("{name}.key")),
            );
        };
        write_pair(
            "apiserver",
            &ca.server_cert_for(
                "kube-apiserver",
                &[
                    "127.0.0.1",
                    NODE_IP,
                    files::KUBERNETES_SERVICE_IP,
                    "localhost",
                    "kubernetes",
                    "kubernetes.default",
                    "kubernetes.default.svc",
                    "kubernetes.default.svc.cluster.local",
                ],
            ),
        );
        write_pair(
            "kubelet",
            &ca.server_cert_for(NODE_NAME, &["localhost", "127.0.0.1", NODE_IP]),
        );
        write_pair(
            "apiserver-kubelet-client",
            &ca.client_cert_in_group("kube-apiserver", "system:masters"),
        );
        let service_accounts = KeyPair::generate().expect("service-account key");
        fs::write(pki.join("sa.key"), service_accounts.serialize_pem()).expect("write sa.key");
        fs::write(pki.join("sa.pub"), service_accounts.public_key_pem()).expect("write sa.pub");

        let server = format!("https://127.0.0.1:{}", files::APISERVER_PORT);
        let identities = [
            (
                "kubeconfig",
                ca.client_cert_in_group("admin", "system:masters"),
            ),
            (
                "kubelet.kubeconfig",
                ca.client_cert_in_group(&format!("system:node:{NODE_NAME}"), "system:nodes"),
            ),
            ("kube-proxy.kubeconfig", ca.client_cert("system:kube-proxy")),
            (
                "scheduler.kubeconfig",
                ca.client_cert("system:kube-scheduler"),
            ),
            (
                "controller-manager.kubeconfig",
                ca.client_cert("system:kube-controller-manager"),
            ),
        ];
        for (file, pair) in identities {
            let text = files::kubeconfig(&server, ca.cert_pem(), &pair.cert_pem, &pair.key_pem);
            fs::write(dir.join(file), text).unwrap_or_else(|e| panic!("{file}: {e}"));
        }
        let write = |name: &str, text: String| {
            fs::write(dir.join(name), text).unwrap_or_else(|e| panic!("{name}: {e}"));
        };
        write("containerd.toml", files::containerd_config(dir));
        write("cni/net.d/10-berth-node.conflist", files::cni_conflist(dir));
        write("kubelet.yaml", files::kubelet_config(dir, &pki));
        // Pods resolve nothing: no cluster DNS, no network beyond the node.
        write(
            "resolv.conf",
            "nameserver 127.0.0.1\noptions ndots:1\n".to_owned(),
        );
    }

    fn start_parts(&self, images: &Path) -> Result<(), String> {
        let dir = &self.dir;
        let p = |name: &str| dir.join(name).display().to_string();
        let pki = |name: &str| dir.join("pki").join(name).display().to_string();
        let tool = |name: &str| tools_dir().join(name);

        let mut etcd = Command::new(tool("etcd"));
        etcd.args([
            "--name=node".to_owned(),
            format!("--data-dir={}", p("etcd")),
            "--listen-client-urls=http://127.0.0.1:2379".to_owned(),
            "--advertise-client-urls=http://127.0.0.1:2379".to_owned(),
            "--listen-peer-urls=http://127.0.0.1:2380".to_owned(),
            "--initial-advertise-peer-urls=http://127.0.0.1:2380".to_owned(),
            "--initial-cluster=node=http://127.0.0.1:2380".to_owned(),
            "--unsafe-no-fsync=true".to_owned(),
            "--log-level=warn".to_owned(),
        ]);
        self.spawn_part("etcd", etcd);

        let mut apiserver = Command::new(tool("kube-apiserver"));
        apiserver.args([
            "--etcd-servers=http://127.0.0.1:2379".to_owned(),
            "--bind-address=0.0.0.0".to_owned(),
            format!("--secure-port={}", files::APISERVER_PORT),
            format!("--advertise-address={NODE_IP}"),
            format!("--cert-dir={}", p("apiserver-certs")),
            format!("--tls-cert-file={}", pki("apiserver.crt")),
            format!("--tls-private-key-file={}", pki("apiserver.key")),
            format!("--client-ca-file={}", pki("ca.crt")),
            "--authorization-mode=Node,RBAC".to_owned(),
            "--enable-admission-plugins=NodeRestriction".to_owned(),
            format!(
                "--kubelet-client-certificate={}",
                pki("apiserver-kubelet-client.crt")
            ),
            format!(
                "--kubelet-client-key={}",
                pki("apiserver-kubelet-client.key")
            ),
            format!("--kubelet-certificate-authority={}", pki("ca.crt")),
            "--kubelet-preferred-address-types=Hostname,InternalIP".to_owned(),
            format!("--service-cluster-ip-range={}", files::SERVICE_CIDR),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".to_owned(),
            format!("--service-account-key-file={}", pki("sa.pub")),
            format!("--service-account-signing-key-file={}", pki("sa.key")),
            "--allow-privileged=true".to_owned(),
            "--enable-priority-and-fairness=false".to_owned(),
        ]);
        self.spawn_part("kube-apiserver", apiserver);
        self.wait_for("kube-apiserver", "kube-apiserver /readyz", || {
            let out = self.try_kubectl(&["get", "--raw=/readyz"]);
            (out.status.success() && out.stdout == b"ok").then_some(())
        })?;

        let mut controller_manager = Command::new(tool("kube-controller-manager"));
        controller_manager.args([
            format!("--kubeconfig={}", p("controller-manager.kubeconfig")),
            format!("--authentication-kubeconfig={}", p("controller-manager.kubeconfig")),
            format!("--authorization-kubeconfig={}", p("controller-manager.kubeconfig")),
            "--controllers=daemonset-controller,deployment-controller,replicaset-controller,job-controller,\
             cronjob-controller,garbage-collector-controller,namespace-controller,serviceaccount-controller,\
             serviceaccount-token-controller,root-ca-certificate-publisher-controller,node-lifecycle-controller,\
             endpointslice-controller,endpoints-controller,disruption-controller,pod-garbage-collector-controller,\
             ttl-after-finished-controller"
                .to_owned(),
            "--use-service-account-credentials=true".to_owned(),
            "--leader-elect=false".to_owned(),
            format!("--service-account-private-key-file={}", pki("sa.key")),
            format!("--root-ca-file={}", pki("ca.crt")),
            "--bind-address=127.0.0.1".to_owned(),
        ]);
        self.spawn_part("kube-controller-manager", controller_manager);

        let mut scheduler = Command::new(tool("kube-scheduler"));
        scheduler.args([
            format!("--kubeconfig={}", p("scheduler.kubeconfig")),
            format!("--authentication-kubeconfig={}", p("scheduler.kubeconfig")),
            format!("--authorization-kubeconfig={}", p("scheduler.kubeconfig")),
            "--leader-elect=false".to_owned(),
            "--bind-address=127.0.0.1".to_owned(),
        ]);
        self.spawn_part("kube-scheduler", scheduler);

        let mut containerd = Command::new("/usr/bin/containerd");
        containerd.args(["--config", &p("containerd.toml")]);
        self.spawn_part("containerd", containerd);
        self.wait_for("containerd", "containerd's socket", || {
            let out = Command::new("ctr")
                .args(["--address", files::CONTAINERD_SOCKET, "version"])
                .output()
                .ok()?;
            out.status.success().then_some(())
        })?;
        for image in ["pause", "busybox", "berth-registry", "berth-operator"] {
            self.import_image(&images.join(image))?;
        }

        let mut kubelet = Command::new(tool("kubelet"));
        kubelet.args([
            format!("--config={}", p("kubelet.yaml")),
            format!("--kubeconfig={}", p("kubelet.kubeconfig")),
            format!("--hostname-override={NODE_NAME}"),
            format!("--node-ip={NODE_IP}"),
            "--v=1".to_owned(),
        ]);
        self.spawn_part("kubelet", kubelet);

        let mut proxy = Command::new(tool("kube-proxy"));
        proxy.args([
            format!("--kubeconfig={}", p("kube-proxy.kubeconfig")),
            "--proxy-mode=iptables".to_owned(),
            format!("--cluster-cidr={}", files::POD_CIDR),
            format!("--hostname-override={NODE_NAME}"),
            "--nodeport-addresses=primary".to_owned(),
            "--iptables-localhost-nodeports=false".to_owned(),
            // Leave the machine-wide conntrack limits alone.
            "--conntrack-max-per-core=0".to_owned(),
            "--conntrack-tcp-timeout-established=0".to_owned(),
            "--conntrack-tcp-timeout-close-wait=0".to_owned(),
            "--oom-score-adj=0".to_owned(),
            "--metrics-bind-address=127.0.0.1:10249".to_owned(),
        ]);
        self.spawn_part("kube-proxy", proxy);

        self.wait_for("kubelet", "the node to be Ready", || {
            let node = self.get(&["node", NODE_NAME])?;
            let conditions = node["status"]["conditions"].as_array()?;
            conditions
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
                .then_some(())
        })?;
        self.wait_for(
            "kube-controller-manager",
            "the default ServiceAccount",
            || {
                self.get(&["serviceaccount", "default", "-n", "default"])
                    .map(|_| ())
            },
        )?;
        Ok(())
    }

    fn spawn_part(&self, name: &str, mut command: Command) {
        command
            .env_clear()
            .env("PATH", crate::tools::child_path())
            .env("HOME", self.dir.join("home"));
        self.spawn(name, command);
    }

    /// Waits up to [`READY_TIMEOUT`] for `check`; on timeout, or when the
    /// process `part` exits, the error carries the tail of its log.
    fn wait_for(
        &self,
        part: &str,
        what: &str,
        mut check: impl FnMut() -> Option<()>,
    ) -> Result<(), String> {
        let started = Instant::now();
        loop {
            if check().is_some() {
                log(&format!("{what}: {:.1} s", started.elapsed().as_secs_f64()));
                return Ok(());
            }
            let exited = lock(&self.processes)
                .iter_mut()
                .find(|p| p.name == part)
                .and_then(|p| p.child.try_wait().ok().flatten());
            if let Some(status) = exited {
                return Err(format!(
                    "{part} exited ({status})\n{}",
                    last_lines(&self.log_of(part), 40)
                ));
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err(format!(
                    "no {what} after {READY_TIMEOUT:?}\n--- {part}\n{}",
                    last_lines(&self.log_of(part), 40)
                ));
            }
            thread::sleep(Duration::from_millis(200));
        }
    }
}

/// What a test node leaves on the machine when it is gone: the settings it
/// may change and the places it may leave something. Equal before a run and
/// after it means the run took everything back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineState {
    /// Values of the kernel settings kubelet changes.
    pub sysctls: Vec<(String, String)>,
    /// Whether the node's cgroup exists in some hierarchy.
    pub cgroups: bool,
    /// Whether the node's data directory exists.
    pub data_dir: bool,
    /// Whether a ledger of a node exists (one runs, or one crashed).
    pub ledger: bool,
    /// The paths the node redirects that exist on the machine.
    pub redirected: Vec<String>,
}

impl MachineState {
    /// The machine as it is now.
    pub fn now() -> MachineState {
        MachineState {
            sysctls: ledger::KERNEL_SYSCTLS
                .iter()
                .map(|name| {
                    let path = Path::new("/proc/sys").join(name.replace('.', "/"));
                    let value = fs::read_to_string(path).unwrap_or_default();
                    ((*name).to_owned(), value.trim().to_owned())
                })
                .collect(),
            cgroups: ledger::cgroup_hierarchies()
                .iter()
                .any(|h| h.join(ledger::CGROUP_ROOT).exists()),
            data_dir: Path::new(DATA_DIR).exists(),
            ledger: ledger_path().exists(),
            redirected: REDIRECTED
                .iter()
                .filter(|(target, _)| Path::new(target).exists())
                .map(|(target, _)| (*target).to_owned())
                .collect(),
        }
    }
}

/// Where `make images` writes the images.
pub fn images_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("images"),
        None => workspace_root().join("target").join("images"),
    }
}

/// Stops every process (SIGTERM), and kills those still running after `grace`.
fn stop_all(mut processes: Vec<Running>, grace: Duration) {
    for process in &processes {
        // SAFETY: kill only sends a signal.
        unsafe {
            libc::kill(process.child.id() as i32, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline
        && processes
            .iter_mut()
            .any(|p| matches!(p.child.try_wait(), Ok(None)))
    {
        thread::sleep(Duration::from_millis(50));
    }
    for process in &mut processes {
        let _ = process.child.kill();
        let _ = process.child.wait();
    }
}

/// Undoes what an earlier run left on the machine when it crashed (nothing
/// when it ended well); returns whether there was something to undo.
pub fn undo_earlier_run() -> Result<bool, String> {
    let _lock = take_machine_lock()?;
    undo_left_behind()
}

fn ledger_path() -> PathBuf {
    Path::new(STATE_DIR).join("ledger.json")
}

/// Undoes the ledger an earlier run left; the caller holds the lock.
fn undo_left_behind() -> Result<bool, String> {
    let Some(earlier) = Ledger::left_at(&ledger_path()) else {
        return Ok(false);
    };
    log("undoing what an earlier run left");
    let problems = earlier.undo();
    if problems.is_empty() {
        Ok(true)
    } else {
        Err(format!(
            "cannot undo an earlier test node: {}",
            problems.join("; ")
        ))
    }
}

/// Takes the machine-wide lock of the test node, or says who holds it.
fn take_machine_lock() -> Result<File, String> {
    fs::create_dir_all(STATE_DIR).map_err(|e| format!("{STATE_DIR}: {e}"))?;
    let path = Path::new(STATE_DIR).join("lock");
    let path = path.as_path();
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let holder = fs::read_to_string(path).unwrap_or_default();
        return Err(format!(
            "another test node runs on this machine (process {}); one node per machine",
            holder.trim()
        ));
    }
    let _ = file.set_len(0);
    let _ = (&file).write_all(std::process::id().to_string().as_bytes());
    Ok(file)
}

/// A mutex's guard, whether or not a panicking test poisoned it.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The standard output of a finished command; a panic with all it printed
/// when it failed.
fn checked(what: &str, output: Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        panic!(
            "`{what}` failed ({})\n--- stdout\n{stdout}\n--- stderr\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    stdout
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn log(message: &str) {
    eprintln!("[node] {message}");
}
