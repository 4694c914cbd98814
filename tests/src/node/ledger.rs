//! What a test node changed on the machine, written down before each change,
//! and the undoing of it.
//!
//! The node runs in network and mount namespaces of its own (see
//! [`super::isolation`]), so its iptables rules, bridge, `net.*` sysctls and
//! mounts vanish with its processes. What outlives them is machine-wide: the
//! processes themselves (until killed), the cgroups kubelet creates under its
//! cgroup root, a few kernel sysctls kubelet sets (`kernel.panic`,
//! `vm.overcommit_memory`, ...), the node's data directory and the empty
//! directories made as mount points. Each is recorded in the ledger file
//! before it is made, so [`Ledger::undo`] can take everything back: at the end
//! of a run, and at the start of the next one when a run crashed.

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The cgroup (in every hierarchy) under which kubelet puts every pod.
pub const CGROUP_ROOT: &str = "berth-node";
/// Where the cgroup hierarchies are mounted.
const CGROUP_MOUNTS: &str = "/sys/fs/cgroup";
/// The kernel settings kubelet changes (`protectKernelDefaults: false`) that
/// are not per network namespace.
pub const KERNEL_SYSCTLS: &[&str] = &[
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
];

/// A process the node started, recognised by its start time as well as its
/// pid (pids are reused).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Started {
    pid: u32,
    start_time: u64,
}

/// The record of a node's changes to the machine, kept in a JSON file.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    /// `net:[inode]` of the node's network namespace.
    netns: Option<String>,
    processes: Vec<Started>,
    /// Original values of [`KERNEL_SYSCTLS`].
    sysctls: BTreeMap<String, String>,
    /// Directories made on the machine that are removed when empty.
    made_dirs: Vec<PathBuf>,
    /// The node's data directory, removed whole.
    data_dir: Option<PathBuf>,
}

impl Ledger {
    /// An empty ledger kept at `path`.
    pub fn new(path: &Path) -> Ledger {
        Ledger {
            path: path.to_owned(),
            netns: None,
            processes: Vec::new(),
            sysctls: BTreeMap::new(),
            made_dirs: Vec::new(),
            data_dir: None,
        }
    }

    /// The ledger an earlier run left at `path`, if any.
    pub fn left_at(path: &Path) -> Option<Ledger> {
        let text = fs::read_to_string(path).ok()?;
        let mut ledger = Ledger::new(path);
        let value: Value = match serde_json::from_str(&text) {
            Ok(value) => value,
            // A ledger cut short by a crash still names the file to remove.
            Err(_) => return Some(ledger),
        };
        ledger.netns = value["netns"].as_str().map(str::to_owned);
        for p in value["processes"].as_array().into_iter().flatten() {
            if let (Some(pid), Some(start_time)) = (p["pid"].as_u64(), p["startTime"].as_u64()) {
                ledger.processes.push(Started {
                    pid: pid as u32,
                    start_time,
                });
            }
        }
        if let Some(map) = value["sysctls"].as_object() {
            for (key, v) in map {
                if let Some(v) = v.as_str() {
                    ledger.sysctls.insert(key.clone(), v.to_owned());
                }
            }
        }
        ledger.made_dirs = value["madeDirs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(PathBuf::from)
            .collect();
        ledger.data_dir = value["dataDir"].as_str().map(PathBuf::from);
        Some(ledger)
    }

    /// Records the network namespace of this process, which must be one of
    /// the node's own: every process found in it at [`Ledger::undo`] is killed.
    pub fn record_netns(&mut self) {
        let own = netns_of("self");
        assert!(
            own.is_some() && own != netns_of("1"),
            "the node's processes must run in a network namespace of their own"
        );
        self.netns = own;
        self.save();
    }

    /// Records a started process.
    pub fn record_process(&mut self, pid: u32) {
        if let Some(start_time) = start_time(pid) {
            self.processes.push(Started { pid, start_time });
            self.save();
        }
    }

    /// Records the current values of [`KERNEL_SYSCTLS`] (once per ledger).
    pub fn record_sysctls(&mut self) {
        for name in KERNEL_SYSCTLS {
            if let Ok(value) = fs::read_to_string(sysctl_path(name)) {
                self.sysctls
                    .entry((*name).to_owned())
                    .or_insert_with(|| value.trim().to_owned());
            }
        }
        self.save();
    }

    /// Records the data directory, then makes it.
    pub fn make_data_dir(&mut self, dir: &Path) {
        self.data_dir = Some(dir.to_owned());
        self.save();
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    }

    /// Makes `dir` and its missing parents, recording each one made.
    pub fn make_dir(&mut self, dir: &Path) {
        let mut missing = Vec::new();
        let mut at = Some(dir);
        while let Some(path) = at.filter(|p| !p.exists()) {
            missing.push(path.to_owned());
            at = path.parent();
        }
        for path in missing.into_iter().rev() {
            self.made_dirs.push(path.clone());
            self.save();
            fs::create_dir(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        }
    }

    /// Makes the node's cgroup root in every hierarchy (kubelet requires it
    /// to exist), copying the parent's cpuset so that tasks may join it.
    pub fn make_cgroup_root(&mut self) {
        for hierarchy in cgroup_hierarchies() {
            let dir = hierarchy.join(CGROUP_ROOT);
            if dir.exists() {
                continue;
            }
            fs::create_dir(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
            for file in ["cpuset.cpus", "cpuset.mems"] {
                if let Ok(value) = fs::read_to_string(hierarchy.join(file)) {
                    let _ = fs::write(dir.join(file), value.trim());
                }
            }
        }
    }

    fn save(&self) {
        let processes: Vec<Value> = self
            .processes
            .iter()
            .map(|p| json!({"pid": p.pid, "startTime": p.start_time}))
            .collect();
        let value = json!({
            "netns": self.netns,
            "processes": processes,
            "sysctls": self.sysctls,
            "madeDirs": self.made_dirs,
            "dataDir": self.data_dir,
        });
        let tmp = self.path.with_extension("tmp");
        let written =
            fs::write(&tmp, value.to_string()).and_then(|()| fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            panic!("write {}: {e}", self.path.display());
        }
    }

    /// Takes back everything recorded: kills the node's processes (those it
    /// started, every process still in its network namespace, every process
    /// in its cgroups), removes its cgroups, restores the kernel settings,
    /// removes its data directory and the directories it made, then the
    /// ledger itself. Returns what could not be undone.
    pub fn undo(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let victims = self.remaining_processes();
        for pid in &victims {
            // SAFETY: kill only sends a signal.
            unsafe {
                libc::kill(*pid as i32, libc::SIGKILL);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while victims
            .iter()
            .any(|pid| Path::new(&format!("/proc/{pid}")).exists())
        {
            if Instant::now() > deadline {
                problems.push(format!("processes still alive: {victims:?}"));
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        problems.extend(remove_cgroups());
        for (name, value) in &self.sysctls {
            if let Err(e) = fs::write(sysctl_path(name), value) {
                problems.push(format!("restore {name}={value}: {e}"));
            }
        }
        if let Some(dir) = &self.data_dir {
            match fs::remove_dir_all(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => problems.push(format!("remove {}: {e}", dir.display())),
            }
        }
        for dir in self.made_dirs.iter().rev() {
            // Only if empty: something else may have put files there since.
            let _ = fs::remove_dir(dir);
        }
        if problems.is_empty() {
            let _ = fs::remove_file(&self.path);
        }
        problems
    }

    /// Every process the node left: started by it, in its network namespace,
    /// or in its cgroups.
    fn remaining_processes(&self) -> Vec<u32> {
        let own = std::process::id();
        let mut pids: Vec<u32> = self
            .processes
            .iter()
            .filter(|p| start_time(p.pid) == Some(p.start_time))
            .map(|p| p.pid)
            .collect();
        // In the node's namespace: its processes and the shims containerd
        // started (and, while the node runs, the test process itself).
        if let Some(netns) = self
            .netns
            .as_ref()
            .filter(|n| Some(*n) != netns_of("1").as_ref())
        {
            pids.extend(
                all_pids()
                    .into_iter()
                    .filter(|pid| netns_of(&pid.to_string()).as_ref() == Some(netns)),
            );
        }
        for hierarchy in cgroup_hierarchies() {
            pids.extend(cgroup_tasks(&hierarchy.join(CGROUP_ROOT)));
        }
        pids.sort_unstable();
        pids.dedup();
        pids.retain(|pid| *pid != own);
        pids
    }
}

/// The cgroup hierarchies of the machine (`/sys/fs/cgroup/<name>`, or the
/// unified one itself).
pub fn cgroup_hierarchies() -> Vec<PathBuf> {
    let root = Path::new(CGROUP_MOUNTS);
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_owned()];
    }
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("cgroup.procs").exists())
        .collect();
    dirs.sort();
    dirs
}

/// Every pid in the cgroup `dir` and below.
fn cgroup_tasks(dir: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
            pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        if let Ok(entries) = fs::read_dir(&dir) {
            stack.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
    }
    pids
}

/// Removes the node's cgroup root and everything below it, deepest first,
/// in every hierarchy; the kernel frees a cgroup a moment after its last
/// task exits, so each removal is retried for a while.
fn remove_cgroups() -> Vec<String> {
    let mut problems = Vec::new();
    for hierarchy in cgroup_hierarchies() {
        let root = hierarchy.join(CGROUP_ROOT);
        let mut dirs = Vec::new();
        let mut stack = vec![root];
        while let Some(dir) = stack.pop() {
            if let Ok(entries) = fs::read_dir(&dir) {
                stack.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
            }
            if dir.exists() {
                dirs.push(dir);
            }
        }
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for dir in dirs {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match fs::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == ErrorKind::NotFound => break,
                    Err(e) if Instant::now() > deadline => {
                        problems.push(format!("remove cgroup {}: {e}", dir.display()));
                        break;
                    }
                    Err(_) => thread::sleep(Duration::from_millis(50)),
                }
            }
        }
    }
    problems
}

/// `net:[inode]` of the network namespace of `/proc/<process>`.
fn netns_of(process: &str) -> Option<String> {
    fs::read_link(format!("/proc/{process}/ns/net"))
        .ok()
        .map(|p| p.display().to_string())
}

fn sysctl_path(name: &str) -> PathBuf {
    Path::new("/proc/sys").join(name.replace('.', "/"))
}

fn all_pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The start time of process `pid` in clock ticks since boot (field 22 of
/// `/proc/PID/stat`), or `None` when it is gone.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; it ends at the last ')'.
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ledger_reads_back_what_it_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.json");
        let mut ledger = Ledger::new(&path);
        ledger.record_process(std::process::id());
        ledger.make_data_dir(&dir.path().join("data"));
        ledger.make_dir(&dir.path().join("a/b"));
        let read = Ledger::left_at(&path).unwrap();
        assert_eq!(read.netns, ledger.netns);
        assert_eq!(read.processes, ledger.processes);
        assert_eq!(
            read.made_dirs,
            [dir.path().join("a"), dir.path().join("a/b")]
        );
        assert_eq!(read.data_dir, Some(dir.path().join("data")));
        // This process is recorded and alive, but never killed by its own ledger.
        assert!(read.remaining_processes().is_empty());
    }
}
