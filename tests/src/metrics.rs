//! Prometheus metrics as a server exposes them: a strict parser of the
//! text exposition (OpenMetrics flavour: `# HELP`, `# TYPE`,
//! `name{label="value"} number` lines, `# EOF` last) that reports the first
//! malformed line, and look-ups of sample values by name and labels.

use std::collections::BTreeMap;

use crate::http::{Client, assert_status};

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample name (`berth_http_requests_total`).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// A whole exposition, parsed.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    /// Every sample, in order.
    pub samples: Vec<Sample>,
    /// The type of each metric family, by family name.
    pub types: BTreeMap<String, String>,
    /// The help text of each metric family, by family name.
    pub help: BTreeMap<String, String>,
}

impl Exposition {
    /// The sum of the values of every sample named `name` whose labels
    /// include all of `labels` (0 when none matches).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    /// The samples named `name` whose labels include all of `labels`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// Whether any sample is named `name`.
    pub fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s.name == name)
    }
}

/// `GET /metrics` from `client`, asserting 200, parsed (panics with the
/// text and the first malformed line when it does not parse).
pub fn scrape(client: &Client) -> Exposition {
    let reply = client.get("/metrics");
    assert_status(&reply, 200, "GET /metrics");
    let text = reply.text();
    parse(&text).unwrap_or_else(|e| panic!("/metrics does not parse: {e}\n--- text ---\n{text}"))
}

const TYPES: [&str; 8] = [
    "counter",
    "gauge",
    "histogram",
    "gaugehistogram",
    "summary",
    "info",
    "stateset",
    "unknown",
];

/// Parse a text exposition. Checks that every line is a well-formed
/// `# HELP name text`, `# TYPE name type`, `# UNIT name unit` or
/// `name{labels} value [timestamp]` line, that every sample belongs to a
/// family declared by a `# TYPE` line before it (with the suffixes its
/// type allows), and that the text ends with `# EOF`.
pub fn parse(text: &str) -> Result<Exposition, String> {
    let mut out = Exposition::default();
    let mut lines: Vec<&str> = text.split('\n').collect();
    if lines.last() == Some(&"") {
        lines.pop();
    }
    match lines.last() {
        Some(&"# EOF") => {
            lines.pop();
        }
        other => return Err(format!("the last line is {other:?}, not \"# EOF\"")),
    }
    for (i, line) in lines.iter().enumerate() {
        let at = |msg: String| format!("line {}: {msg}: {line:?}", i + 1);
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let keyword = parts.next().unwrap_or_default();
            let name = parts.next().unwrap_or_default();
            let value = parts.next().unwrap_or_default();
            if !is_metric_name(name) {
                return Err(at(format!("bad metric name {name:?}")));
            }
            match keyword {
                "HELP" => {
                    out.help.insert(name.to_owned(), value.to_owned());
                }
                "TYPE" => {
                    if !TYPES.contains(&value) {
                        return Err(at(format!("unknown type {value:?}")));
                    }
                    if out
                        .types
                        .insert(name.to_owned(), value.to_owned())
                        .is_some()
                    {
                        return Err(at(format!("second TYPE for {name}")));
                    }
                }
                "UNIT" => {}
                "EOF" => return Err(at("# EOF before the end".into())),
                _ => return Err(at(format!("unknown comment keyword {keyword:?}"))),
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            return Err(at("empty line or stray comment".into()));
        }
        let sample = parse_sample(line).map_err(at)?;
        if family_of(&sample.name, &out.types).is_none() {
            return Err(at(format!(
                "sample {} belongs to no family declared by a TYPE line before it",
                sample.name
            )));
        }
        out.samples.push(sample);
    }
    Ok(out)
}

/// The declared family that sample name `name` belongs to.
fn family_of<'a>(name: &str, types: &'a BTreeMap<String, String>) -> Option<&'a str> {
    let allowed = |kind: &str| -> &'static [&'static str] {
        match kind {
            "counter" => &["_total", "_created"],
            "histogram" | "gaugehistogram" => {
                &["_bucket", "_count", "_sum", "_created", "_gcount", "_gsum"]
            }
            "summary" => &["", "_count", "_sum", "_created"],
            "info" => &["_info"],
            _ => &[""],
        }
    };
    types.iter().find_map(|(family, kind)| {
        allowed(kind)
            .iter()
            .any(|suffix| name.strip_suffix(suffix) == Some(family.as_str()))
            .then_some(kind.as_str())
    })
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

/// `name{k="v",...} value [timestamp]`.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        let end;
        loop {
            match chars.peek() {
                Some((i, '}')) => {
                    end = *i;
                    break;
                }
                None => return Err("unterminated label set".into()),
                _ => {}
            }
            let start = chars.peek().map(|(i, _)| *i).unwrap_or_default();
            let mut eq = None;
            for (i, c) in chars.by_ref() {
                if c == '=' {
                    eq = Some(i);
                    break;
                }
            }
            let eq = eq.ok_or("label without =")?;
            let key = &inner[start..eq];
            if !is_label_name(key) {
                return Err(format!("bad label name {key:?}"));
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("label {key} value is not quoted"));
            }
            let mut value = String::new();
            loop {
                match chars.next() {
                    Some((_, '"')) => break,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, '\\')) => value.push('\\'),
                        other => return Err(format!("bad escape {other:?} in label {key}")),
                    },
                    Some((_, c)) => value.push(c),
                    None => return Err(format!("unterminated value of label {key}")),
                }
            }
            if labels.insert(key.to_owned(), value).is_some() {
                return Err(format!("label {key} given twice"));
            }
            match chars.peek() {
                Some((_, ',')) => {
                    chars.next();
                }
                Some((_, '}')) => {}
                other => return Err(format!("expected , or }} after label {key}, got {other:?}")),
            }
        }
        rest = &inner[end + 1..];
    }
    let rest = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let mut fields = rest.split(' ');
    let value_text = fields.next().unwrap_or_default();
    let value = parse_value(value_text).ok_or_else(|| format!("bad value {value_text:?}"))?;
    if let Some(ts) = fields.next() {
        parse_value(ts).ok_or_else(|| format!("bad timestamp {ts:?}"))?;
    }
    if fields.next().is_some() {
        return Err("trailing fields".into());
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let text = "# HELP a_requests Requests.\n# TYPE a_requests counter\n\
                    a_requests_total{route=\"blob\",status=\"200\"} 3\n\
                    # TYPE q gauge\nq 1.5\n# EOF\n";
        let parsed = parse(text).unwrap();
        assert_eq!(parsed.sum("a_requests_total", &[("route", "blob")]), 3.0);
        assert_eq!(parsed.sum("q", &[]), 1.5);
        assert!(parse("q 1\n# EOF\n").is_err(), "no TYPE");
        assert!(parse("# TYPE q gauge\nq 1\n").is_err(), "no EOF");
        assert!(
            parse("# TYPE q gauge\nq{a=b} 1\n# EOF\n").is_err(),
            "unquoted"
        );
        assert!(parse("# TYPE q gauge\nq x\n# EOF\n").is_err(), "bad value");
    }
}
