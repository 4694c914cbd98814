//! The OCI distribution-spec conformance suite (`oci-conformance`, built by
//! `make tools`) run against a server, its summary and result tree parsed,
//! and a report of every failure with the HTTP exchange the suite recorded.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::tools;

/// The suite's own totals, from the summary it prints.
#[derive(Debug, Default, Clone)]
pub struct Totals {
    /// The overall result (`Pass` or `FAIL`).
    pub result: String,
    /// Tests that passed.
    pub pass: u64,
    /// Tests that failed.
    pub fail: u64,
    /// Tests that errored.
    pub error: u64,
    /// Tests skipped.
    pub skip: u64,
    /// Tests disabled by the configuration.
    pub disabled: u64,
    /// The names of the skipped tests.
    pub skipped: Vec<String>,
}

impl Totals {
    /// Failures and errors together.
    pub fn failed(&self) -> u64 {
        self.fail + self.error
    }
}

/// Parse the lines after `OCI Conformance Result: X`, of the form
/// `  Pass..........:        705`.
fn parse_totals(stdout: &str) -> Option<Totals> {
    let mut lines = stdout
        .lines()
        .skip_while(|l| !l.starts_with("OCI Conformance Result:"));
    let mut totals = Totals {
        result: lines
            .next()?
            .trim_start_matches("OCI Conformance Result:")
            .trim()
            .to_owned(),
        ..Totals::default()
    };
    let mut seen = 0;
    for line in lines.take(7) {
        let Some((label, count)) = line.split_once(':') else {
            continue;
        };
        let Ok(count) = count.trim().parse::<u64>() else {
            continue;
        };
        let slot = match label.trim().trim_end_matches('.') {
            "Pass" => &mut totals.pass,
            "FAIL" => &mut totals.fail,
            "Error" => &mut totals.error,
            "Skip" => &mut totals.skip,
            "Disabled" => &mut totals.disabled,
            _ => continue,
        };
        *slot = count;
        seen += 1;
    }
    (seen == 5).then_some(totals)
}

/// One node of the result tree the suite prints under `Test results`.
#[derive(Debug)]
struct Node {
    indent: usize,
    name: String,
    status: String,
    errors: Vec<String>,
}

/// The result tree: lines `<indent>OCI Conformance Test/...: STATUS`, each
/// followed by its error lines, if any.
fn parse_tree(stdout: &str) -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::new();
    for line in stdout
        .lines()
        .skip_while(|l| *l != "Test results")
        .skip(1)
        .take_while(|l| !l.starts_with("Configuration:"))
    {
        let trimmed = line.trim_start();
        let node = trimmed
            .starts_with("OCI Conformance Test")
            .then(|| trimmed.rsplit_once(": "))
            .flatten()
            .filter(|(_, status)| {
                ["Pass", "FAIL", "Error", "Skip", "Disabled", "Unknown"].contains(status)
            });
        match node {
            Some((name, status)) => nodes.push(Node {
                indent: line.len() - trimmed.len(),
                name: name.to_owned(),
                status: status.to_owned(),
                errors: Vec::new(),
            }),
            None => {
                if let Some(last) = nodes.last_mut() {
                    last.errors.push(line.to_owned());
                }
            }
        }
    }
    nodes
}

/// The leaves of the tree (tests with no sub-tests) whose status is `status`.
fn leaves_with<'a>(nodes: &'a [Node], status: &str) -> Vec<&'a Node> {
    nodes
        .iter()
        .enumerate()
        .filter(|(i, node)| {
            let leaf = nodes
                .get(i + 1)
                .is_none_or(|next| next.indent <= node.indent);
            leaf && node.status == status
        })
        .map(|(_, node)| node)
        .collect()
}

/// The recorded request/response output of test case `name` in junit.xml.
fn junit_output(junit: &str, name: &str) -> Option<String> {
    let open = format!("<testcase name=\"{}\"", xml_escape(name));
    let start = junit.find(&open)?;
    let case = &junit[start..];
    let case = &case[..case.find("</testcase>").unwrap_or(case.len())];
    let body = case
        .split_once("<system-err>")?
        .1
        .split_once("</system-err>")?
        .0;
    Some(xml_unescape(body))
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;")
}

fn xml_unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&apos;", "'")
        .replace("&#xA;", "\n")
        .replace("&#x9;", "\t")
        .replace("&#xD;", "\r")
        .replace("&amp;", "&")
}

/// How many failing tests get their recorded HTTP exchange in the report.
const DETAILED_FAILURES: usize = 20;

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}\n... ({} bytes in all)", &text[..end], text.len())
}

fn run_suite(addr: &str, work: &Path) -> (Output, PathBuf) {
    let results = work.join("results");
    let output = Command::new(tools::require("oci-conformance"))
        // The suite reads ./oci-conformance.yaml if present: run it where there is none.
        .current_dir(work)
        .env_clear()
        .env("PATH", tools::child_path())
        .env("HOME", work)
        .env("OCI_REGISTRY", addr)
        .env("OCI_TLS", "disabled")
        .env("OCI_REPO1", "conformance/repo1")
        .env("OCI_REPO2", "conformance/repo2")
        .env("OCI_VERSION", "1.1")
        .env("OCI_RESULTS_DIR", &results)
        .env("OCI_LOG", "warn")
        .env("OCI_API_PULL", "true")
        .env("OCI_API_PUSH", "true")
        .env("OCI_API_TAGS_LIST", "true")
        .env("OCI_API_REFERRER", "true")
        .env("OCI_API_BLOBS_DELETE", "true")
        .env("OCI_API_MANIFESTS_DELETE", "true")
        .env("OCI_API_TAGS_DELETE", "true")
        .env("OCI_API_BLOBS_UPLOAD_CANCEL", "true")
        .output()
        .expect("run oci-conformance");
    (output, results)
}

/// Run the whole suite (pull, push, content discovery, content management,
/// all enabled; spec 1.1) against the plain-HTTP registry at `addr`
/// (`127.0.0.1:PORT`), with deletes expected to work.
///
/// Returns the totals when the suite passed with zero failures and errors.
/// Otherwise panics with every failing test, the recorded requests and
/// responses of the first ones, the suite's stderr and the tail of
/// `server_log()`.
pub fn run(addr: &str, server_log: impl Fn() -> String) -> Totals {
    let work = tempfile::Builder::new()
        .prefix("conformance-")
        .tempdir()
        .expect("temporary directory");
    let (output, results) = run_suite(addr, work.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);

    // The suite exits 0 even when it could not load its config or write its
    // reports, so completion is judged by its summary and report files.
    let Some(mut totals) = parse_totals(&stdout) else {
        panic!(
            "the conformance suite printed no totals (exit {})\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
            output.status
        );
    };
    for report in ["results.yaml", "junit.xml", "report.html"] {
        assert!(
            results.join(report).is_file(),
            "the conformance suite wrote no {report}\n--- stderr ---\n{stderr}"
        );
    }
    let tree = parse_tree(&stdout);
    totals.skipped = leaves_with(&tree, "Skip")
        .into_iter()
        .map(|node| node.name.clone())
        .collect();

    if totals.failed() > 0 || totals.result != "Pass" || !output.status.success() {
        let junit = fs::read_to_string(results.join("junit.xml")).unwrap_or_default();
        let mut report = String::new();
        let failing: Vec<&Node> = ["FAIL", "Error"]
            .iter()
            .flat_map(|status| leaves_with(&tree, status))
            .collect();
        for node in &failing {
            report.push_str(&format!("  {}: {}\n", node.status, node.name));
        }
        // Details for the first failures: the suite's error and the last
        // requests and responses it recorded (the failing exchange is last).
        for node in failing.iter().take(DETAILED_FAILURES) {
            report.push_str(&format!("\n=== {}: {}\n", node.status, node.name));
            for line in &node.errors {
                report.push_str(line.trim_start());
                report.push('\n');
            }
            if let Some(out) = junit_output(&junit, &node.name) {
                report.push_str("--- last requests and responses ---\n");
                report.push_str(tail(&out, 4000));
                report.push('\n');
            }
        }
        panic!(
            "the OCI conformance suite found {} failures and {} errors (result {}, exit {}):\n{report}\n\
             --- suite stderr ---\n{}\n--- server log (tail) ---\n{}",
            totals.fail,
            totals.error,
            totals.result,
            output.status,
            truncate(&stderr, 20_000),
            tail(&server_log(), 8000)
        );
    }
    assert!(totals.pass > 0, "the conformance suite passed nothing");
    totals
}

fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}
