//! Header maps (`http.headers`, a notification endpoint's `headers`): each
//! header name with its list of values, as Distribution writes them.
//!
//! Names and values are checked when the file is read, so a header that
//! HTTP cannot carry is refused naming its key (`http.headers.X-Name`), and the registry gets
//! an [`http::HeaderMap`] it can send as it is.

use std::collections::BTreeMap;
use std::fmt;

use http::header::{AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION};
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::de::{DeserializeSeed, MapAccess, Visitor};
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
}

/// One header's name and values, or what HTTP cannot carry of them.
fn entry(name: &str, values: &[String]) -> Result<(HeaderName, Vec<HeaderValue>), String> {
    let header = HeaderName::try_from(name).map_err(|e| format!("not a header name: {e}"))?;
    let sensitive = CREDENTIALS.contains(&header);
    let values = values
        .iter()
        .map(|value| {
            let mut value = HeaderValue::try_from(value.as_str())
                .map_err(|e| format!("{value:?} is not a header value: {e}"))?;
            value.set_sensitive(sensitive);
            Ok(value)
        })
        .collect::<Result<_, String>>()?;
    Ok((header, values))
}

/// Headers whose values are credentials: marked sensitive, they print as
/// `Sensitive` in any `Debug` of the settings.
const CREDENTIALS: [HeaderName; 3] = [AUTHORIZATION, PROXY_AUTHORIZATION, COOKIE];

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
        deserializer.deserialize_map(HeadersVisitor)
    }
}

/// Reads a header map entry by entry, so a bad name or value is an error
/// of that entry and the file's key path ends in the header's name.
struct HeadersVisitor;

impl<'de> Visitor<'de> for HeadersVisitor {
    type Value = Headers;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map of header names to lists of values")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Headers, A::Error> {
        let mut map = HeaderMap::new();
        while let Some(name) = entries.next_key::<String>()? {
            let (header, values) = entries.next_value_seed(HeaderEntry(&name))?;
            for value in values {
                map.append(header.clone(), value);
            }
        }
        Ok(Headers(map))
    }
}

/// The values of the header it names, checked with its name.
struct HeaderEntry<'a>(&'a str);

impl<'de> DeserializeSeed<'de> for HeaderEntry<'_> {
    type Value = (HeaderName, Vec<HeaderValue>);

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        let values = Vec::<String>::deserialize(deserializer)?;
        entry(self.0, &values).map_err(serde::de::Error::custom)
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
        assert!(
            err.starts_with("http.headers.Bad Name: not a header name"),
            "{err}"
        );
        let err = error(&text.replace("[nosniff]", "[\"a\\nb\"]"), &[]);
        assert!(
            err.starts_with("http.headers.X-Content-Type-Options: \"a\\nb\" is not a header value"),
            "{err}"
        );
    }
}
