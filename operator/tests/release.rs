//! The release pipeline (`.github/workflows/release.yml`), which cannot run
//! here: it lints clean with actionlint (and shellcheck for its scripts),
//! and it publishes the images under the names the chart and the operator
//! use by default.

use std::process::Command;

use berth_operator::controller::DEFAULT_REGISTRY_IMAGE;
use berth_tests::tools::{child_path, require, workspace_root};

const WORKFLOW: &str = ".github/workflows/release.yml";

#[test]
fn release_workflow_lints_clean() {
    let actionlint = require("actionlint");
    let output = Command::new(actionlint)
        .arg("-shellcheck=shellcheck")
        .arg(WORKFLOW)
        .current_dir(workspace_root())
        .env_clear()
        .env("PATH", child_path())
        .output()
        .expect("run actionlint");
    assert!(
        output.status.success(),
        "actionlint {WORKFLOW}:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn release_publishes_the_images_the_chart_and_operator_name() {
    let root = workspace_root();
    let workflow = std::fs::read_to_string(root.join(WORKFLOW)).expect("the workflow");
    let values =
        std::fs::read_to_string(root.join("charts/berth/values.yaml")).expect("values.yaml");
    let published = |image: &str| workflow.contains(&format!("image: {image}\n"));
    for image in ["berth-registry", "berth-operator"] {
        assert!(published(image), "{WORKFLOW} does not publish {image}");
        let repository = format!("repository: ghcr.io/berth-dev/{image}\n");
        assert!(
            values.contains(&repository),
            "values.yaml does not name {repository}"
        );
    }
    assert!(workflow.contains("REGISTRY: ghcr.io\n") && workflow.contains("OWNER: berth-dev\n"));
    assert!(
        DEFAULT_REGISTRY_IMAGE.starts_with("ghcr.io/berth-dev/berth-registry:v"),
        "the operator's --registry-image default {DEFAULT_REGISTRY_IMAGE} is the published image"
    );
}
