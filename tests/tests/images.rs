//! The images `make images` builds are the ones the Dockerfile describes:
//! the same user, ports, volumes, entrypoint, command, environment and
//! labels in each image's configuration, and minimal, non-root contents
//! (scripts/images/rootfs.sh, which both use).

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::Path;

use berth_tests::node::images_dir;
use berth_tests::tools::workspace_root;
use serde_json::{Value, json};

/// The configuration a final stage of the Dockerfile gives its image, as
/// an OCI image config's `config` object.
fn dockerfile_stage(target: &str) -> Value {
    let dockerfile = fs::read_to_string(workspace_root().join("Dockerfile")).expect("Dockerfile");
    // Instructions, with continuation lines joined.
    let joined = dockerfile.replace("\\\n", " ");
    let mut in_stage = false;
    let mut config = serde_json::Map::new();
    let mut labels = BTreeMap::new();
    for line in joined.lines().map(str::trim) {
        if let Some(from) = line.strip_prefix("FROM ") {
            in_stage = from.ends_with(&format!(" AS {target}"));
            continue;
        }
        if !in_stage || line.starts_with('#') {
            continue;
        }
        let (instruction, rest) = line.split_once(' ').unwrap_or((line, ""));
        let rest = rest.trim();
        match instruction {
            "USER" => {
                config.insert("User".into(), json!(rest));
            }
            "EXPOSE" => {
                let ports: serde_json::Map<String, Value> = rest
                    .split_whitespace()
                    .map(|p| (p.to_owned(), json!({})))
                    .collect();
                config.insert("ExposedPorts".into(), Value::Object(ports));
            }
            "VOLUME" => {
                let paths: Vec<String> = serde_json::from_str(rest).expect("VOLUME as JSON");
                let volumes: serde_json::Map<String, Value> =
                    paths.into_iter().map(|p| (p, json!({}))).collect();
                config.insert("Volumes".into(), Value::Object(volumes));
            }
            "ENTRYPOINT" | "CMD" => {
                let args: Vec<String> = serde_json::from_str(rest).expect("exec form");
                let key = if instruction == "CMD" {
                    "Cmd"
                } else {
                    "Entrypoint"
                };
                config.insert(key.into(), json!(args));
            }
            "ENV" => {
                config.insert("Env".into(), json!([rest]));
            }
            "LABEL" => {
                // key="value" pairs; values hold spaces but no quotes.
                for pair in rest.split("\" ").map(|p| p.trim()) {
                    let (key, value) = pair.split_once('=').expect("LABEL key=value");
                    labels.insert(key.to_owned(), value.trim_matches('"').to_owned());
                }
            }
            _ => {}
        }
    }
    assert!(!config.is_empty(), "no stage `{target}` in the Dockerfile");
    config.insert("Labels".into(), json!(labels));
    Value::Object(config)
}

/// One entry of a layer: its path and its tar type flag (`b'0'` a file,
/// `b'2'` a symbolic link, `b'5'` a directory).
type Entry = (String, u8);

/// The configuration of the image in the OCI layout `name`, and its one
/// layer's entries.
fn built_image(name: &str) -> (Value, Vec<Entry>) {
    let layout = images_dir().join(name);
    let read_json = |path: &Path| -> Value {
        let text = fs::read(path)
            .unwrap_or_else(|e| panic!("{}: {e} (run `make images`)", path.display()));
        serde_json::from_slice(&text).expect("JSON")
    };
    let blob = |digest: &Value| {
        let digest = digest.as_str().expect("a digest");
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let index = read_json(&layout.join("index.json"));
    let manifest = read_json(&blob(&index["manifests"][0]["digest"]));
    let config = read_json(&blob(&manifest["config"]["digest"]));
    let layer = fs::File::open(blob(&manifest["layers"][0]["digest"])).expect("the layer");
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(layer)
        .read_to_end(&mut tar)
        .expect("a gzip layer");
    (config["config"].clone(), tar_entries(&tar))
}

/// The entries of an uncompressed ustar/pax archive.
fn tar_entries(tar: &[u8]) -> Vec<Entry> {
    let field = |block: &[u8], at: usize, len: usize| {
        let text = String::from_utf8_lossy(&block[at..at + len]).into_owned();
        text.trim_matches(|c: char| c == '\0' || c == ' ')
            .to_owned()
    };
    let octal = |text: String| u64::from_str_radix(&text, 8).unwrap_or(0);
    let mut entries = Vec::new();
    let mut at = 0;
    while at + 512 <= tar.len() && tar[at] != 0 {
        let header = &tar[at..at + 512];
        let size = octal(field(header, 124, 12)) as usize;
        let kind = header[156];
        let prefix = field(header, 345, 155);
        let name = field(header, 0, 100);
        let path = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        if kind != b'x' && kind != b'g' {
            entries.push((path, kind));
        }
        at += 512 + size.div_ceil(512) * 512;
    }
    entries
}

#[test]
fn images_match_the_dockerfile_and_hold_only_the_runtime() {
    for (name, target) in [
        ("berth-registry", "registry"),
        ("berth-operator", "operator"),
    ] {
        let (config, entries) = built_image(name);
        assert_eq!(
            config,
            dockerfile_stage(target),
            "{name}: `make images` and the Dockerfile's stage {target} differ"
        );
        assert_eq!(
            config["User"], "65532:65532",
            "{name} runs as the nonroot user"
        );
        let files: Vec<&str> = entries
            .iter()
            .filter(|(_, kind)| *kind != b'5')
            .map(|(path, _)| path.as_str())
            .collect();
        let binary = format!("usr/local/bin/{name}");
        assert!(files.contains(&binary.as_str()), "{name}: {files:?}");
        // The public roots, which a Registry's `trustedCA` adds to (the
        // operator's `IMAGE_CA_FILE`).
        assert!(
            files.contains(&"etc/ssl/certs/ca-certificates.crt"),
            "{name} holds the CA bundle: {files:?}"
        );
        for file in &files {
            let allowed = *file == binary
                || file.starts_with("lib/")
                || file.starts_with("lib64/")
                || file.starts_with("etc/");
            assert!(
                allowed,
                "{name} holds {file}, which the runtime does not need"
            );
        }
        assert!(
            !files
                .iter()
                .any(|f| f.ends_with("/sh") || f.ends_with("busybox")),
            "{name} has no shell"
        );
    }
}
