//! Header maps (`http.headers`, a notification endpoint's `headers`): each
//! header name with its list of values, as Distribution writes them.
//!
//! Names and values are checked when the file is read, so a header that
//! HTTP cannot carry is refused naming the section, and the registry gets
//! an [`http::HeaderMap`] it can send as it is.

use std::collections::BTreeMap;

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A checked header map.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Headers(HeaderMap);

impl Headers {
    /// The headers, ready to send.
    pub fn map(&self) -> &HeaderMap {
        &self.0
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Checks each name and value of `headers`; the error names the header.
    pub fn parse(headers: &BTreeMap<String, Vec<String>>) -> Result<Headers, String> {
        let mut map = HeaderMap::new();
        for (name, values) in headers {
            let header = HeaderName::try_from(name.as_str())
                .map_err(|e| format!("{name}: not a header name: {e}"))?;
            for value in values {
                let value = HeaderValue::try_from(value.as_str())
                    .map_err(|e| format!("{name}: {value:?} is not a header value: {e}"))?;
                map.append(header.clone(), value);
            }
        }
        Ok(Headers(map))
    }
}

impl Serialize for Headers {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let lists: BTreeMap<&str, Vec<String>> = self
            .0
            .keys()
            .map(|name| {
                let values = self
                    .0
                    .get_all(name)
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .collect();
                (name.as_str(), values)
            })
            .collect();
        lists.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Headers, D::Error> {
        let lists = BTreeMap::<String, Vec<String>>::deserialize(deserializer)?;
        Headers::parse(&lists).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{BASIC, error, parse};

    #[test]
    fn headers_read_back_as_written() {
        let text = "X-A: [one, two]\nX-B: [three]\n";
        let headers: Headers = serde_norway::from_str(text).unwrap();
        assert_eq!(headers.map().get_all("x-a").iter().count(), 2);
        let written = serde_norway::to_string(&headers).unwrap();
        assert_eq!(
            serde_norway::from_str::<Headers>(&written).unwrap(),
            headers
        );
        assert!(serde_norway::from_str::<Headers>("Bad Name: [x]\n").is_err());
    }

    #[test]
    fn response_headers_are_checked() {
        let text = BASIC.replace(
            "http:\n",
            "http:\n  headers:\n    X-Content-Type-Options: [nosniff]\n",
        );
        let s = parse(&text, &[]).unwrap();
        assert_eq!(s.headers["x-content-type-options"], "nosniff");
        let err = error(&text.replace("X-Content-Type-Options", "Bad Name"), &[]);
        assert!(err.starts_with("http.headers: Bad Name:"), "{err}");
        let err = error(&text.replace("[nosniff]", "[\"a\\nb\"]"), &[]);
        assert!(
            err.starts_with("http.headers: X-Content-Type-Options:"),
            "{err}"
        );
    }
}
