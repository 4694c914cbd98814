//! The commands README.md shows, as the tests run them.
//!
//! Every line of the README's `sh` blocks is one of [`COMMANDS`], and each of
//! those names the test that runs it as written. `tests/tests/readme.rs`
//! fails when the README shows a command this list does not know (or this
//! list keeps one the README dropped), so a documented command cannot drift
//! away from what the tests run.

use std::path::PathBuf;

/// The README's first command: the registry with no configuration.
pub const RUN_REGISTRY: &str = "cargo run --release -p berth-registry";
/// The README's second command: every test.
pub const RUN_TESTS: &str = "make test";
/// The README's first push, from an OCI layout in the working directory.
pub const PUSH_LAYOUT: &str = "skopeo copy --dest-tls-verify=false oci:my-layout:latest docker://127.0.0.1:5000/team/app:latest";
/// The README's first pull, into another OCI layout.
pub const PULL_LAYOUT: &str =
    "skopeo copy --src-tls-verify=false docker://127.0.0.1:5000/team/app:latest oci:copy:latest";
/// The README's collection of the development registry's content.
pub const GC_DEVELOPMENT: &str = "cargo run --release -p berth-registry -- gc --dry-run";
/// The README's check of its example configuration.
pub const CHECK_EXAMPLE: &str = "cargo run --release -p berth-registry -- config check example.yml";
/// The README's list of the operator's flags.
pub const OPERATOR_HELP: &str = "cargo run --release -p berth-operator -- --help";

/// The README's Helm install of the operator.
pub const HELM_INSTALL: &str =
    "helm install berth charts/berth --namespace berth-system --create-namespace";
/// The README's first Registry, on each node's disk.
pub const APPLY_FILESYSTEM_EXAMPLE: &str = "kubectl apply -f examples/registry-filesystem.yaml";
/// The README's wait for that Registry.
pub const WAIT_READY: &str =
    "kubectl -n registry wait registry/local --for=condition=Ready --timeout=5m";
/// The README's look at the Registries.
pub const GET_REGISTRIES: &str = "kubectl -n registry get registries";
/// The README's way to reach the Registry's Service from a workstation.
pub const PORT_FORWARD: &str = "kubectl -n registry port-forward service/local 5001:5000 &";
/// The README's first push through that Service.
pub const FIRST_PUSH: &str = "skopeo copy --dest-tls-verify=false oci:my-layout:latest docker://127.0.0.1:5001/team/app:latest";
/// The README's first pod pulled from the node's registry.
pub const RUN_POD: &str = "kubectl run hello --image=localhost:5000/team/app:latest --restart=Never -- echo pulled from the node";
/// The README's wait for that pod.
pub const WAIT_POD: &str =
    "kubectl wait pod/hello --for=jsonpath={.status.phase}=Succeeded --timeout=2m";
/// The README's look at what the pod printed.
pub const POD_LOGS: &str = "kubectl logs hello";
/// The README's removal of the operator.
pub const HELM_UNINSTALL: &str = "helm uninstall berth --namespace berth-system";
/// The README's install of the CRD for an operator run outside a cluster.
pub const APPLY_CRD: &str = "kubectl apply -f crds/registry.yaml";
/// The README's operator run outside a cluster.
pub const RUN_OPERATOR: &str = "cargo run --release -p berth-operator";

/// A command the README shows and the test that runs it.
pub struct Documented {
    /// The command line, exactly as the README shows it (without a comment).
    pub command: &'static str,
    /// `file::test` of the test that runs it.
    pub run_by: &'static str,
}

/// Every command of the README's `sh` blocks.
pub const COMMANDS: &[Documented] = &[
    Documented {
        command: RUN_REGISTRY,
        run_by: "tests/tests/readme.rs::first_command_serves_from_data_in_distributions_layout",
    },
    Documented {
        command: RUN_TESTS,
        run_by: ".ci/run (the test command runs itself)",
    },
    Documented {
        command: PUSH_LAYOUT,
        run_by: "tests/tests/readme.rs::first_command_serves_from_data_in_distributions_layout",
    },
    Documented {
        command: PULL_LAYOUT,
        run_by: "tests/tests/readme.rs::first_command_serves_from_data_in_distributions_layout",
    },
    Documented {
        command: GC_DEVELOPMENT,
        run_by: "tests/tests/readme.rs::first_command_serves_from_data_in_distributions_layout",
    },
    Documented {
        command: CHECK_EXAMPLE,
        run_by: "tests/tests/readme.rs::example_configuration_passes_config_check",
    },
    Documented {
        command: HELM_INSTALL,
        run_by: "tests/tests/node.rs::readme_install_runs_the_operator_in_the_cluster",
    },
    Documented {
        command: APPLY_FILESYSTEM_EXAMPLE,
        run_by: "tests/tests/node.rs::readme_deploy_runs_a_pod_pulled_from_the_nodes_registry",
    },
    Documented {
        command: WAIT_READY,
        run_by: "tests/tests/node.rs::readme_deploy_runs_a_pod_pulled_from_the_nodes_registry",
    },
    Documented {
        command: GET_REGISTRIES,
        run_by: "tests/tests/node.rs::readme_deploy_runs_a_pod_pulled_from_the_nodes_registry",
    },
    Documented {
        command: PORT_FORWARD,
        run_by: "tests/tests/node.rs::readme_deploy_runs_a_pod_pulled_from_the_nodes_registry",
    },
    Documented {
        command: FIRST_PUSH,
        run_by: "tests/tests/node.rs::readme_deploy_runs_a_pod_pulled_from_the_nodes_registry",
    },
    Documented {
        command: RUN_POD,
        run_by: "tests/tests/node.rs::readme_deploy_runs_a_pod_pulled_from_the_nodes_registry",
    },
    Documented {
        command: WAIT_POD,
        run_by: "tests/tests/node.rs::readme_deploy_runs_a_pod_pulled_from_the_nodes_registry",
    },
    Documented {
        command: POD_LOGS,
        run_by: "tests/tests/node.rs::readme_deploy_runs_a_pod_pulled_from_the_nodes_registry",
    },
    Documented {
        command: HELM_UNINSTALL,
        run_by: "tests/tests/node.rs::uninstall_leaves_no_lease_held",
    },
    Documented {
        command: APPLY_CRD,
        run_by: "tests/tests/node.rs::the_operator_runs_outside_the_cluster",
    },
    Documented {
        command: RUN_OPERATOR,
        run_by: "tests/tests/node.rs::the_operator_runs_outside_the_cluster",
    },
    Documented {
        command: OPERATOR_HELP,
        run_by: "tests/tests/readme.rs::operator_help_lists_every_flag",
    },
];

/// README.md of the workspace.
pub fn path() -> PathBuf {
    crate::tools::workspace_root().join("README.md")
}

/// README.md's text; panics when it cannot be read.
pub fn text() -> String {
    let path = path();
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Every command line of the fenced blocks marked `lang` in `markdown`, with
/// trailing comments (`  # ...`) and surrounding blanks removed.
pub fn commands(markdown: &str, lang: &str) -> Vec<String> {
    fenced_blocks(markdown, lang)
        .iter()
        .flat_map(|block| block.lines())
        .map(|line| match line.find(" #") {
            Some(at) => &line[..at],
            None => line,
        })
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// The bodies of the fenced blocks marked `lang` (```` ```lang ````), in order.
pub fn fenced_blocks(markdown: &str, lang: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut current, fence) {
            (None, Some(info)) if info.trim() == lang => current = Some(String::new()),
            (None, Some(_)) => current = Some(String::from("\u{0}")), // another language
            (Some(body), Some(_)) => {
                if !body.starts_with('\u{0}') {
                    blocks.push(std::mem::take(body));
                }
                current = None;
            }
            (Some(body), None) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_come_from_the_marked_blocks_only() {
        let markdown = "text\n```sh\nmake test   # all of it\n\n```\n```yaml\nkey: value\n```\n```sh\ncargo run\n```\n";
        assert_eq!(commands(markdown, "sh"), ["make test", "cargo run"]);
        assert_eq!(fenced_blocks(markdown, "yaml"), ["key: value\n"]);
    }
}
